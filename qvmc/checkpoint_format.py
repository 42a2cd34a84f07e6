"""The ``.qvmc`` checkpoint format: checksummed ``.npz`` + JSON bytes, verified decoding without
unpickling, restoring into a template, and reading files (legacy pickles only after an opt-in)."""

import datetime
import hashlib
import io
import json
import pickle  # legacy files only, after an explicit opt-in
import pickletools
import sys
import warnings
from typing import Any, Dict, Optional, Tuple

import jax
import ml_dtypes
import numpy as np

FORMAT_VERSION = 3
MAGIC = b'QVMC-CKPT 3\n'
LEGACY_MAGIC = b'QVMC-CKPT 2\n'
META_KEY = '__meta__'
_SCALARS = {'bool': bool, 'int': int, 'float': float, 'complex': complex}  # checked in this order
_DTYPE_KINDS = {'bool': 'b', 'int': 'iu', 'float': 'f', 'complex': 'c'}


def _is_key(x) -> bool:
    return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON (numpy scalars and arrays, tuples converted); ``ValueError`` otherwise."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    if value is None or isinstance(value, (bool, int, str)) or isinstance(value, float) and np.isfinite(value):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, f'{where}[{k!r}]') for k, v in value.items()}
    raise ValueError(f'Checkpoint {where} is {value!r:.80} ({type(value).__name__}), which JSON cannot '
                     'store; use finite numbers, strings, lists, and dicts with string keys.')


def encode(tree: Any, metadata: Optional[Dict[str, Any]] = None, *, allow_nonfinite: bool = False) -> bytes:
    """The bytes of a checkpoint file: header line, checksum line, ``.npz`` body.

    Args:
      tree: any JAX pytree (dicts, lists, tuples, NamedTuples, None) of numeric or bool arrays,
        typed PRNG keys and Python scalars.
      metadata: JSON-serialisable dict describing the model and run (checked by ``load``).
      allow_nonfinite: store NaN or infinite values instead of refusing them.

    Raises:
      ValueError: a leaf is not numeric (e.g. an object array or a string), a floating leaf
        holds a non-finite value, or the metadata is not JSON-serialisable.
    """
    meta_dict = _jsonable(dict(metadata or {}), 'metadata')
    arrays, entries = {}, []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = jax.tree_util.keystr(path)
        if key in arrays or key == META_KEY:
            raise ValueError(f'Two leaves of the checkpoint tree have the same path {key!r}.')
        entry = {'key': key, 'kind': 'array'}
        if _is_key(leaf):
            entry.update(kind='key', impl=str(jax.random.key_impl(leaf)))
            leaf = jax.random.key_data(leaf)
        elif isinstance(leaf, np.generic):
            entry['kind'] = 'scalar'
        else:
            entry['kind'] = next((name for name, t in _SCALARS.items() if isinstance(leaf, t)), 'array')
        array = np.asarray(jax.device_get(leaf))
        extended = array.dtype.type.__module__ == 'ml_dtypes'  # bfloat16 etc.: stored as raw bits
        if not extended and array.dtype.kind not in 'biufc':
            raise ValueError(f'Checkpoint leaf {key} has dtype {array.dtype} ({type(leaf).__name__}); '
                             'only numeric and bool arrays, PRNG keys and Python scalars can be stored.')
        array = array if array.dtype.isnative else array.astype(array.dtype.newbyteorder('='))
        entry['dtype'] = array.dtype.name
        stored = array.view(f'u{array.dtype.itemsize}') if extended else array
        floating = array.dtype.kind in 'fc' or (extended and 'float' in array.dtype.name)
        if floating and not allow_nonfinite and not np.all(np.isfinite(array)):
            raise ValueError(f'Checkpoint leaf {key} holds non-finite values (NaN or inf); refusing to '
                             'write it (pass allow_nonfinite=True to store it anyway).')
        arrays[key] = stored
        entries.append(dict(entry, shape=list(array.shape)))
    meta = {'format_version': FORMAT_VERSION, 'metadata': meta_dict, 'leaves': entries,
            'library_versions': {'qvmc': getattr(sys.modules.get('qvmc'), '__version__', None),
                                 'jax': jax.__version__, 'numpy': np.__version__},
            'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, allow_nan=False).encode('utf-8'), np.uint8)
    np.savez(buffer := io.BytesIO(), **arrays)
    body = buffer.getvalue()
    return MAGIC + b'sha256 ' + hashlib.sha256(body).hexdigest().encode() + b'\n' + body


def _verified_body(data: bytes, path: str, magic: bytes) -> bytes:
    header_end = data.find(b'\n', len(magic))
    line = data[len(magic):header_end]
    if header_end < 0 or not line.startswith(b'sha256 '):
        raise ValueError(f'Checkpoint {path!r} is unreadable: its checksum line is missing (truncated file?).')
    body = data[header_end + 1:]
    if hashlib.sha256(body).hexdigest().encode() != line[len(b'sha256 '):]:
        raise ValueError(f'Checkpoint {path!r} is unreadable: the SHA-256 checksum does not match its content '
                         '(corrupted or truncated); use an older checkpoint or delete this one.')
    return body


def decode(data: bytes, path: str = '<bytes>') -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Verifies and reads the bytes of a checkpoint file (format 3) without unpickling anything.

    Returns:
      ``(leaves, meta)``: the leaves by ``keystr`` path in flatten order (numpy arrays, typed
      PRNG keys, Python scalars) and the JSON header (``format_version``, ``metadata``,
      ``leaves``, ``library_versions``, ``created``).

    Raises:
      ValueError: the data is empty, truncated, corrupted or not a qvmc checkpoint.
    """
    if not data:
        raise ValueError(f'Checkpoint {path!r} is unreadable: the file is empty (truncated?).')
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise ValueError(f'Checkpoint {path!r} is unreadable: it ends inside its header (truncated file?).')
        version = data[:32].split(b'\n')[0]
        what = (f'a checkpoint of another format ({version.decode(errors="replace")!r}; this qvmc reads '
                f'format {FORMAT_VERSION})' if data.startswith(b'QVMC-CKPT ') else 'not a qvmc checkpoint')
        raise ValueError(f'Checkpoint {path!r} is unreadable: it is {what}.')
    body = _verified_body(data, path, MAGIC)
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
        meta = json.loads(stored.pop(META_KEY).tobytes().decode('utf-8'))
        if meta.get('format_version') != FORMAT_VERSION:
            raise ValueError(f'format version {meta.get("format_version")!r} in the header')
        leaves = {}
        for entry in meta['leaves']:
            key, kind = entry['key'], entry['kind']
            array, name = stored.pop(key), entry['dtype']
            extended = not name.startswith('_') and hasattr(ml_dtypes, name)
            dtype = np.dtype(getattr(ml_dtypes, name) if extended else name)
            if extended and array.dtype.itemsize == dtype.itemsize and array.dtype.kind == 'u':
                array = array.view(dtype)
            if list(array.shape) != entry['shape'] or array.dtype != dtype:
                raise ValueError(f'leaf {key} is {array.dtype}{list(array.shape)}, its header says '
                                 f'{entry["dtype"]}{entry["shape"]}')
            leaves[key] = (jax.random.wrap_key_data(array, impl=entry['impl']) if kind == 'key' else
                           array[()] if kind == 'scalar' else
                           _SCALARS[kind](array[()].item()) if kind in _SCALARS else array)
        if stored:
            raise ValueError(f'arrays {sorted(stored)} are not listed in the header')
    except Exception as err:  # noqa: BLE001 — any parse failure means an unreadable file
        raise ValueError(f'Checkpoint {path!r} is unreadable: its content is not a valid qvmc checkpoint '
                         f'({err!r}); delete it or point to another one.') from err
    return leaves, meta


def _mismatch(value: Any, t: Any) -> Optional[str]:
    """Why stored ``value`` cannot stand for template leaf ``t``; None if it can."""
    shape, dtype = (tuple(t.shape), t.dtype) if hasattr(t, 'dtype') else ((), np.asarray(t).dtype)
    if hasattr(value, 'dtype') and hasattr(value, 'shape'):
        ok, got = tuple(value.shape) == shape and value.dtype == dtype, f'{value.dtype}{list(value.shape)}'
    else:  # a Python scalar matches any 0-d template of the same kind (int32 or int64, ...)
        kind = next((n for n, s in _SCALARS.items() if isinstance(value, s)), None)
        ok = kind is not None and shape == () and not _is_key(t) and np.dtype(dtype).kind in _DTYPE_KINDS[kind]
        got = f'a Python {type(value).__name__}'
    return None if ok else f'{got} in the checkpoint, expected {dtype}{list(shape)}'


def restore(leaves: Dict[str, Any], template: Any) -> Any:
    """Rebuilds a pytree shaped like ``template`` from stored leaves, matched by ``keystr`` path.

    Args:
      leaves: the flat dict of ``decode``/``load_payload``.
      template: a pytree of arrays, scalars or ``jax.ShapeDtypeStruct`` (e.g. ``jax.eval_shape``).

    Raises:
      ValueError: listing every missing or extra key and every shape or dtype difference.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    wanted = {jax.tree_util.keystr(p): t for p, t in flat}
    missing, extra = [k for k in wanted if k not in leaves], [k for k in leaves if k not in wanted]
    problems = ([f'missing from the checkpoint: {", ".join(missing)}'] if missing else []) + (
        [f'in the checkpoint but not expected: {", ".join(extra)}'] if extra else [])
    for key, t in wanted.items():
        why = _mismatch(leaves[key], t) if key in leaves else None
        if why:
            problems.append(f'{key or "<root>"} is {why}')
    if problems:
        raise ValueError('The checkpoint does not match the expected state: ' + '; '.join(problems)
                         + '. It was written with different settings: use matching settings or a new run directory.')
    return jax.tree_util.tree_unflatten(treedef, [leaves[jax.tree_util.keystr(p)] for p, _ in flat])


def _load_legacy(data: bytes, path: str, allow_pickle: bool) -> Dict[str, Any]:
    version, body = (2, _verified_body(data, path, LEGACY_MAGIC)) if data.startswith(LEGACY_MAGIC) else (1, data)
    try:
        for _ in pickletools.genops(body):  # parses the opcodes without running any of them
            pass
    except Exception as err:  # noqa: BLE001
        raise ValueError(f'Checkpoint {path!r} is unreadable: it is neither a qvmc checkpoint nor a valid '
                         f'legacy pickle ({err!r}); delete it or point to another one.') from err
    if not allow_pickle:
        raise ValueError(f'Checkpoint {path!r} is unreadable without opting in: it is a legacy pickle checkpoint '
                         f'(format {version}), and loading a pickle can execute arbitrary code. Pass '
                         'allow_pickle=True only for files you wrote yourself, then save it again in the new format.')
    warnings.warn(f'Loading legacy pickle checkpoint {path!r} (format {version}); pickles can execute code.',
                  UserWarning, stacklevel=3)
    try:
        payload = pickle.loads(body)  # noqa: S301
    except Exception as err:  # noqa: BLE001 — any unpickling failure means an unreadable file
        raise ValueError(f'Checkpoint {path!r} is unreadable ({err!r}); delete it or point to another one.') from err
    if not isinstance(payload, dict) or payload.get('format_version') not in (1, 2):
        raise ValueError(f'Checkpoint {path!r} is not a qvmc checkpoint of format version 1 or 2.')
    return {'format_version': payload['format_version'], 'metadata': payload.get('metadata') or {},
            'state': payload.get('state')}


def load_payload(path: str, allow_pickle: bool = False) -> Dict[str, Any]:
    """Reads and verifies a checkpoint: ``{'format_version', 'metadata', 'leaves'}``.

    Args:
      path: checkpoint file.
      allow_pickle: read legacy pickle checkpoints (format 1 or 2) too, with a ``UserWarning``;
        they come back as ``{'format_version', 'metadata', 'state'}``. Pickles can execute
        code: allow them only for files you wrote yourself.

    Raises:
      ValueError: the file is missing, empty, truncated, fails its checksum, is not a qvmc
        checkpoint, or is a legacy pickle and ``allow_pickle`` is False.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise ValueError(f'Checkpoint {path!r} cannot be read ({err}).') from err
    if data.startswith(LEGACY_MAGIC) or data[:1] == b'\x80':
        return _load_legacy(data, path, allow_pickle)
    leaves, meta = decode(data, path)
    return {'format_version': FORMAT_VERSION, 'metadata': meta['metadata'], 'leaves': leaves}


def check_metadata(path: str, stored: Dict[str, Any], expected: Optional[Dict[str, Any]]) -> None:
    """Raises ``ValueError`` naming the first key of ``expected`` whose stored value differs."""
    for key, value in (expected or {}).items():
        try:
            value = _jsonable(value, repr(key))  # stored values went through JSON: tuples are lists
        except ValueError:
            pass
        if stored.get(key) != value:
            raise ValueError(f'Checkpoint {path!r} is incompatible: {key}={stored.get(key)!r}, '
                             f'this run has {key}={value!r}. Use a new run directory or matching settings.')


def load(path: str, template: Any = None, expected_metadata: Optional[Dict[str, Any]] = None,
         allow_pickle: bool = False) -> Any:
    """Reads a checkpoint written by ``save``.

    Args:
      path: checkpoint file.
      template: pytree of arrays or ``jax.ShapeDtypeStruct`` to restore into (see ``restore``);
        None returns the flat dict of leaves by ``keystr`` path.
      expected_metadata: every key in it must match the stored metadata.
      allow_pickle: see ``load_payload``; a legacy file's state is returned as it was pickled
        (or restored into ``template``).

    Raises:
      ValueError: the file is unreadable, or it does not match the metadata or template.
    """
    payload = load_payload(path, allow_pickle)
    check_metadata(path, payload['metadata'], expected_metadata)
    if 'leaves' not in payload and template is None:
        return payload['state']
    leaves = payload['leaves'] if 'leaves' in payload else {
        jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(payload['state'])[0]}
    return leaves if template is None else restore(leaves, template)
