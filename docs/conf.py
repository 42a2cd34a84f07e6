"""Sphinx configuration of the qvmc documentation (MyST Markdown, furo, API pages from the docstrings)."""

import os
import shutil
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
sys.path.insert(0, ROOT)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# autosummary writes the API pages here on every build; stale pages of removed modules would break the build.
shutil.rmtree(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'api', 'generated'), ignore_errors=True)

import qvmc  # noqa: E402

project = 'qvmc'
author = 'the qvmc developers'
copyright = '2026, the qvmc developers'  # noqa: A001
release = version = qvmc.__version__

extensions = ['myst_parser', 'sphinx.ext.autodoc', 'sphinx.ext.autosummary', 'sphinx.ext.napoleon',
              'sphinx.ext.mathjax', 'sphinx.ext.viewcode']
source_suffix = {'.md': 'markdown', '.rst': 'restructuredtext'}
exclude_patterns = ['_build', '_scripts', 'Thumbs.db', '.DS_Store']
templates_path = ['_templates']

# Cross-references are checked: a renamed function named in a page or an API list breaks the build.
nitpicky = True
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False  # a module's __all__ is its public API
autodoc_default_options = {'members': True, 'undoc-members': False, 'show-inheritance': True}
autodoc_member_order = 'bysource'
autodoc_typehints = 'none'  # shapes and types are in the docstrings (Google style); signatures stay short
autodoc_mock_imports = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
suppress_warnings = []
# Types of other libraries (no intersphinx: the build must work offline) are not cross-referenced.
nitpick_ignore_regex = [(r'py:(class|obj|data)', r'(numpy|np|jax|jaxlib|haiku|hk|pandas|pd|optax|arviz|'
                                                r'blackjax|folx|matplotlib|typing|collections)(\..*)?')]

myst_enable_extensions = ['dollarmath', 'colon_fence', 'deflist']
myst_heading_anchors = 3

html_theme = 'furo'
html_title = f'qvmc {release}'
html_static_path = ['_static']
