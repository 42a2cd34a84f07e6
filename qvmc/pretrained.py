"""Pretrained models: find model files by name, load them, and predict with them.

The file format (reader, verifier, writer) is ``qvmc.model_file``; ``export_model`` and ``read`` are
imported from there::

    model = pretrained.load('foundation_polarized')   # shipped in the package: qvmc/models/
    est = model.estimate(9, 3.7, num_walkers=256, num_steps=200)
    print(est.energy, est.components['interaction'])

    qvmc-models list                 # or: python -m qvmc.pretrained list
    qvmc-models export runs/foundation_polarized my_model.qvmc --card card.json

Models are found by name in ``$QVMC_MODELS_DIR`` (directories separated by ``os.pathsep``) and then
among the models shipped inside the installed package; any model file can be given by path.
"""

import argparse
import glob
import importlib.resources
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from ansatz import harmonic_basis
from ansatz.registry import ANSATZE, make_ansatz
from hamiltonians import padding
from hamiltonians.context import Context
from qvmc.config import VMCConfig
from qvmc.model_file import MODEL_SUFFIX, build, export_model, read, restore_params, spins_for  # noqa: F401

DEFAULT_MODEL = 'foundation_polarized'
MODELS_ENV = 'QVMC_MODELS_DIR'  # extra model directories, searched before the shipped ones
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


def models_dir() -> str:
    """The directory of the models shipped inside the installed package (``qvmc/models``)."""
    return os.fspath(importlib.resources.files('qvmc').joinpath('models'))


def search_path(directory: Optional[str] = None) -> List[str]:
    """The directories searched for models by name, first match wins: ``[directory]`` if given, else
    the directories of ``$QVMC_MODELS_DIR`` (``os.pathsep``-separated) followed by ``models_dir()``."""
    if directory is not None:
        return [os.fspath(directory)]
    user = [d for d in os.environ.get(MODELS_ENV, '').split(os.pathsep) if d]
    return user + [models_dir()]


def available(directory: Optional[str] = None) -> List[str]:
    """Names of the models found on ``search_path(directory)`` (``<dir>/<name>.qvmc``), sorted."""
    names = set()
    for folder in search_path(directory):
        paths = glob.glob(os.path.join(glob.escape(folder), '*' + MODEL_SUFFIX))
        names.update(os.path.basename(p)[:-len(MODEL_SUFFIX)] for p in paths)
    return sorted(names)


def resolve(name_or_path: str, directory: Optional[str] = None) -> str:
    """The file of a model: an existing path, or ``<dir>/<name>.qvmc`` for the first directory of
    ``search_path(directory)`` that has it.

    Raises:
      ValueError: neither exists; the message lists the available names.
    """
    name_or_path = os.fspath(name_or_path)
    if os.path.isfile(name_or_path):
        return name_or_path
    looks_like_path = os.sep in name_or_path or name_or_path.endswith(MODEL_SUFFIX)
    folders = search_path(directory)
    if not looks_like_path and _NAME.match(name_or_path):
        for folder in folders:
            path = os.path.join(folder, name_or_path + MODEL_SUFFIX)
            if os.path.isfile(path):
                return path
    names = available(directory)
    shipped = ', '.join(names) if names else f'none (no *{MODEL_SUFFIX} files in {", ".join(folders)})'
    what = 'no such file' if looks_like_path else 'unknown model name'
    raise ValueError(f'Pretrained model {name_or_path!r}: {what}. Available models: {shipped}; or pass the '
                     f'path of a model file (qvmc-models export writes one from a training run).')


def read_metadata(name_or_path: str, directory: Optional[str] = None) -> Dict[str, Any]:
    """The verified metadata of a model (name or path); cheap, compiles nothing."""
    return read(resolve(name_or_path, directory))[1]


class PretrainedModel:
    """A loaded model: parameters, the wavefunction and system they belong to, and the card.

    Attributes:
      name: the model's name; path: its file.
      params: the parameter pytree (numpy arrays in the stored dtype).
      wavefunction: the ``ansatz.Wavefunction`` its stored config builds.
      system: the Hamiltonian family (e.g. ``QuantumDot(max_electrons=30)``).
      spin_sector: ``'polarized'`` or ``'unpolarized'``.
      metadata: everything stored (ansatz, system, training set, training, sampling, card, shapes).
      card: the model card's facts (dict).
      sampling: ``VMCConfig`` with the training run's sampler settings.
    """

    def __init__(self, path: str, params, wavefunction, system, metadata: Dict[str, Any]):
        self.path, self.params, self.metadata = path, params, metadata
        self.wavefunction, self.system = wavefunction, system
        self.name = metadata.get('name') or os.path.basename(path).removesuffix(MODEL_SUFFIX)
        self.spin_sector = metadata['spin_sector']
        self.card = metadata.get('card') or {}
        self.sampling = VMCConfig(**metadata.get('sampling') or {})
        self._variants = {}  # open-shell order -> wavefunction with the same parameters
        self._predictors = {}

    def __repr__(self):
        a = self.metadata['ansatz']
        n_params = sum(int(np.size(p)) for p in jax.tree.leaves(self.params))
        return (f'PretrainedModel({self.name!r}: {a["name"]} {a["config"]}, {n_params} parameters, '
                f'{type(self.system).__name__}, {self.spin_sector})')

    @property
    def training_contexts(self) -> List[Context]:
        """The contexts the model was trained on (the last block of a blockwise schedule)."""
        return [Context.make(p['n_up'], p['n_down'], **{k: v for k, v in p.items() if k not in ('n_up', 'n_down')})
                for p in self.metadata['training_set']['contexts']]

    def spins(self, n: int):
        """``(n_up, n_down)`` of N electrons in the model's spin sector."""
        return spins_for(self.spin_sector, n)

    def context(self, n: int, lam: float, omega: Optional[float] = None) -> Context:
        """A validated context of N electrons in the model's spin sector (``ValueError`` if invalid)."""
        return self.system.context(*self.spins(n), lam=lam, omega=omega)

    def open_shell_orders(self, n: int) -> Tuple[str, ...]:
        """The open-shell orders (``ansatz.harmonic_basis.OPEN_SHELL_ORDERS``) that give different
        wavefunctions at N, the stored one first: one for a closed-shell N or an ansatz without
        the option. Every order is a valid wavefunction of the same parameters, so the lowest
        energy among them is a variational choice, not a fit."""
        stored = self._stored_open_shell_order
        if self.metadata['ansatz']['name'] != 'fermi_sets':
            return (stored,)
        orders = [stored] + [o for o in harmonic_basis.OPEN_SHELL_ORDERS if o != stored]
        labels = {o: [harmonic_basis.orbital_labels(c, o) for c in self.spins(n)] for o in orders}
        return tuple(o for i, o in enumerate(orders) if all(labels[o] != labels[q] for q in orders[:i]))

    @property
    def _stored_open_shell_order(self) -> str:
        return self.metadata['ansatz']['config'].get('open_shell_order', 'filling')  # older files: the filling order

    def _wavefunction(self, open_shell_order: Optional[str]):
        a = self.metadata['ansatz']
        if open_shell_order is None or open_shell_order == self._stored_open_shell_order:
            return self.wavefunction
        if a['name'] != 'fermi_sets' or open_shell_order not in harmonic_basis.OPEN_SHELL_ORDERS:
            raise ValueError(f'open_shell_order must be one of {harmonic_basis.OPEN_SHELL_ORDERS} (Fermi Sets '
                             f'models only), got {open_shell_order!r} for a {a["name"]} model.')
        if open_shell_order not in self._variants:
            config = ANSATZE[a['name']].config_cls(**dict(a['config'], open_shell_order=open_shell_order))
            self._variants[open_shell_order] = make_ansatz(a['name'], config)
        return self._variants[open_shell_order]

    def predictor(self, config: Optional[VMCConfig] = None, *, open_shell_order: Optional[str] = None, **kwargs):
        """A ``qvmc.inference.Predictor`` for this model (``config``: default the training sampler
        settings; ``open_shell_order``: default the stored one)."""
        from qvmc.inference import Predictor  # pylint: disable=import-outside-toplevel
        return Predictor(self._wavefunction(open_shell_order), self.system, config or self.sampling, **kwargs)

    def sweep(self, config: Optional[VMCConfig] = None, *, open_shell_order: Optional[str] = None, **kwargs):
        """A ``qvmc.sweep.Sweep`` (energies, density, g(r), slices) for this model."""
        from qvmc.sweep import Sweep  # pylint: disable=import-outside-toplevel
        return Sweep(self._wavefunction(open_shell_order), self.system, config or self.sampling, **kwargs)

    def layout(self, pad_n: Optional[int]) -> padding.Layout:
        """The walker layout of ``pad_n`` electrons in the model's sector: padded to that content, under
        which every N ≤ ``pad_n`` shares one compiled program (None: unpadded, one program per N)."""
        if pad_n is not None and (isinstance(pad_n, bool) or not isinstance(pad_n, (int, np.integer)) or pad_n < 1):
            raise ValueError(f'pad_n must be a positive number of electrons or None, got {pad_n!r}.')
        return padding.make_layout(None if pad_n is None else self.spins(int(pad_n)))

    def estimates(self, n: int, lam: float, rng_key=None, *, orders: Optional[Sequence[str]] = None,
                  omega: Optional[float] = None, seed: int = 0, pad_n: Optional[int] = None,
                  **kwargs) -> Dict[str, Any]:
        """``{open-shell order: Predictor.estimate}`` at N and λ for ``orders`` (default all of
        ``open_shell_orders(n)``), each from the same key. ``pad_n``: run N padded to ``pad_n``
        electrons, so that every N ≤ ``pad_n`` reuses one compiled program (``hamiltonians.padding``)."""
        key = jax.random.PRNGKey(seed) if rng_key is None else rng_key
        ctx = self.context(n, lam, omega)
        layout = self.layout(pad_n)
        layout.check(ctx)  # before anything compiles
        out = {}
        for order in (self.open_shell_orders(n) if orders is None else orders):
            if (order, layout) not in self._predictors:
                self._predictors[order, layout] = self.predictor(open_shell_order=order, pad=layout)
            out[order] = self._predictors[order, layout].estimate(self.params, ctx, key, **kwargs)
        return out

    def estimate(self, n: int, lam: float, rng_key=None, *, omega: Optional[float] = None, seed: int = 0,
                 open_shell_order: str = 'auto', pad_n: Optional[int] = None, **kwargs):
        """``Predictor.estimate`` at N electrons and coupling λ (keyword arguments: ``num_walkers``,
        ``num_steps``, burn-in bounds). ``rng_key`` defaults to ``PRNGKey(seed)``.
        ``open_shell_order='auto'`` estimates every order of ``open_shell_orders(n)`` and returns the
        lowest energy (for polarized N = 7 at λ = 8 the ``|m| = 3`` sector, ``'high_m'``); or name one.
        ``pad_n``: see ``estimates``."""
        orders = None if open_shell_order == 'auto' else [open_shell_order]
        found = self.estimates(n, lam, rng_key, orders=orders, omega=omega, seed=seed, pad_n=pad_n, **kwargs)
        return min(found.values(), key=lambda est: est.energy.mean)


def load(name_or_path: str, directory: Optional[str] = None) -> PretrainedModel:
    """Loads a model by name (``search_path``: ``$QVMC_MODELS_DIR``, then the shipped models) or a model
    file by path (``directory``: search only there).

    Raises:
      ValueError: unknown name (the message lists the available ones), a corrupted file
        (checksum), an unknown format version, or parameters whose shapes do not fit the
        ansatz the stored config builds (the message names the leaf).
    """
    path = resolve(name_or_path, directory)
    leaves, meta = read(path)
    wavefunction, system = build(meta)
    params = restore_params(leaves, wavefunction, system, meta, path)
    return PretrainedModel(path, params, wavefunction, system, meta)


def main(argv=None):
    """``qvmc-models list | show NAME | export SOURCE OUT [--card card.json]`` (also ``python -m
    qvmc.pretrained``). A bad name, file or card ends with one line on stderr and exit status 2,
    nothing written."""
    p = argparse.ArgumentParser(prog='qvmc-models', description=__doc__.split('\n', maxsplit=1)[0])
    sub = p.add_subparsers(dest='command', required=True)
    sub.add_parser('list', help='names of the available models (QVMC_MODELS_DIR, then the shipped ones)')
    show = sub.add_parser('show', help='the metadata of a model (name or path)')
    show.add_argument('model')
    export = sub.add_parser('export', help='checkpoint or run directory -> model file')
    export.add_argument('source')
    export.add_argument('out')
    export.add_argument('--card', default=None, help='JSON file with the model card (dict)')
    args = p.parse_args(argv)
    try:
        if args.command == 'list':
            print('\n'.join(available()) or f'(no models in {", ".join(search_path())})')
        elif args.command == 'show':
            print(json.dumps(read_metadata(args.model), indent=1))
        else:
            card = None
            if args.card:
                with open(args.card, encoding='utf-8') as f:
                    card = json.load(f)
                if not isinstance(card, dict):
                    raise ValueError(f'--card {args.card!r} must hold a JSON object, not {type(card).__name__}')
            meta = export_model(args.source, args.out, card)
            size = os.path.getsize(args.out)
            print(f'wrote {args.out} ({size / 1024:.0f} KiB, {len(meta["param_shapes"])} parameter arrays)')
    except (ValueError, OSError) as err:
        p.exit(2, f'{p.prog} {args.command}: error: {err}\n')


if __name__ == '__main__':
    main()
