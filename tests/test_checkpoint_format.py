"""Tests of the pickle-free checkpoint format (qvmc.checkpoint)."""

import hashlib
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qvmc import checkpoint


class _Exploit:
    """Unpickling it would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _tree():
    params = {'dense': {'w': jnp.arange(6, dtype=jnp.float32).reshape(2, 3) / 7, 'b': jnp.zeros(3, jnp.float32)},
              'scale': np.array([1.0 / 3, np.pi], np.float64)}
    return {'params': params,
            'opt_state': optax.adam(1e-3).init(params),
            'typed_key': jax.random.key(0),
            'raw_key': jax.random.PRNGKey(1),
            'counts': np.array([1, -2, 3], np.int32),
            'step': 7, 'lr': 0.25, 'flag': True, 'np_scalar': np.float32(1.5),
            'nothing': None, 'pair': (None, [np.ones((), np.bool_)])}


def _assert_identical(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if isinstance(x, (bool, int, float)):
            assert type(x) is type(y) and x == y
            continue
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert y.dtype == x.dtype and jax.random.key_impl(y) == jax.random.key_impl(x)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def test_round_trip_into_template_is_bit_identical(tmp_path):
    tree = _tree()
    path = str(tmp_path / 'c.qvmc')
    checkpoint.save(path, tree, {'width': np.int64(8), 'sizes': (1, 2)})
    with open(path, 'rb') as f:
        assert f.readline() == b'QVMC-CKPT 3\n' and f.readline().startswith(b'sha256 ')
    template = jax.eval_shape(lambda: tree)
    restored = checkpoint.load(path, template, {'width': 8, 'sizes': (1, 2)})
    _assert_identical(tree, restored)
    assert isinstance(restored['opt_state'][0], optax.ScaleByAdamState)
    assert restored['nothing'] is None and restored['pair'][0] is None
    assert isinstance(restored['np_scalar'], np.float32)
    # the typed key still works as a key
    assert jnp.array_equal(jax.random.normal(restored['typed_key'], (3,)), jax.random.normal(tree['typed_key'], (3,)))
    payload = checkpoint.load_payload(path)
    assert payload['format_version'] == 3 and payload['metadata'] == {'width': 8, 'sizes': [1, 2]}
    assert set(payload['leaves']) == {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    assert checkpoint.load(path).keys() == payload['leaves'].keys()
    _, meta = checkpoint.decode(open(path, 'rb').read())
    assert set(meta) >= {'format_version', 'metadata', 'leaves', 'library_versions', 'created'}
    assert [e['key'] for e in meta['leaves']] == list(payload['leaves'])


def test_encode_refuses_bad_leaves_and_metadata():
    with pytest.raises(ValueError, match=r"\['obj'\]"):
        checkpoint.encode({'obj': np.array([object()])})
    with pytest.raises(ValueError, match=r"metadata\['name'\]"):
        checkpoint.encode({'a': np.ones(2)}, {'name': object()})
    with pytest.raises(ValueError, match=r"\['b'\]\[1\].*non-finite"):
        checkpoint.encode({'a': np.ones(2), 'b': [np.ones(2), np.array([1.0, np.nan]), np.array([np.inf])]})
    data = checkpoint.encode({'b': np.array([np.inf])}, allow_nonfinite=True)
    assert np.isinf(checkpoint.decode(data)[0]["['b']"]).all()


def test_corrupted_truncated_and_foreign_files_are_refused(tmp_path):
    path = str(tmp_path / 'c.qvmc')
    checkpoint.save(path, {'a': np.arange(100.0)})
    data = open(path, 'rb').read()
    bad = bytearray(data)
    bad[-200] ^= 0x01
    for content, message in ((bytes(bad), 'checksum does not match'), (data[:len(data) // 2], 'truncated'),
                             (data[:5], 'truncated'), (b'', 'empty'), (b'hello world\n', 'not a qvmc checkpoint')):
        with open(path, 'wb') as f:
            f.write(content)
        with pytest.raises(ValueError, match=message):
            checkpoint.load_payload(path)
    with pytest.raises(ValueError, match='cannot be read'):
        checkpoint.load_payload(str(tmp_path / 'missing.qvmc'))


def test_legacy_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / 'PWNED'
    path = str(tmp_path / 'evil.pkl')
    body = pickle.dumps({'format_version': 2, 'metadata': {}, 'state': _Exploit(str(marker))})
    with open(path, 'wb') as f:
        f.write(b'QVMC-CKPT 2\nsha256 ' + hashlib.sha256(body).hexdigest().encode() + b'\n' + body)
    with pytest.raises(ValueError, match='legacy pickle.*allow_pickle=True'):
        checkpoint.load_payload(path)
    found, payload, failures = checkpoint.latest_readable(str(tmp_path), 'evil.pkl')
    assert found is None and 'legacy pickle' in failures[0][1]
    assert not marker.exists()
    with pytest.warns(UserWarning, match='legacy pickle'):
        payload = checkpoint.load_payload(path, allow_pickle=True)
    assert marker.exists() and payload['format_version'] == 2 and 'state' in payload
    # format 1: a bare pickle
    with open(path, 'wb') as f:
        f.write(pickle.dumps({'format_version': 1, 'metadata': {'w': 1}, 'state': (np.ones(2),)}))
    with pytest.raises(ValueError, match='legacy pickle'):
        checkpoint.load(path)
    with pytest.warns(UserWarning):
        assert checkpoint.load_payload(path, allow_pickle=True)['format_version'] == 1


def test_template_mismatch_lists_the_keys(tmp_path):
    path = str(tmp_path / 'c.qvmc')
    checkpoint.save(path, {'a': np.ones(3, np.float32), 'b': np.ones(2), 'old': np.ones(1)})
    template = {'a': jax.ShapeDtypeStruct((4,), jnp.float32), 'b': np.ones(2), 'new': np.ones(1)}
    with pytest.raises(ValueError) as info:
        checkpoint.load(path, template)
    message = str(info.value)
    assert "['new']" in message and "['old']" in message and "['a']" in message and 'new run directory' in message
    assert "['b']" not in message


def test_rotation_keeps_the_newest(tmp_path):
    run = str(tmp_path / 'run')
    for step in (1, 2, 3, 4, 5):
        checkpoint.save_rotating(run, step, {'x': np.full(2, step, np.int32)}, {'w': 1}, keep=3)
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [5, 4, 3]
    assert sorted(os.listdir(run)) == ['checkpoint-00000003.qvmc', 'checkpoint-00000004.qvmc',
                                       'checkpoint-00000005.qvmc', 'checkpoint.qvmc']
    assert checkpoint.load(os.path.join(run, 'checkpoint.qvmc'))["['x']"][0] == 5
    path, payload, failures = checkpoint.latest_readable(run)
    assert path.endswith('checkpoint-00000005.qvmc') and not failures and payload['metadata'] == {'w': 1}
    open(os.path.join(run, 'checkpoint-00000005.pkl'), 'wb').close()  # legacy files sort after .qvmc
    assert checkpoint.list_checkpoints(run)[1][1].endswith('00000005.pkl')


def test_failing_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = str(tmp_path)
    checkpoint.save_rotating(run, 1, {'x': np.ones(1)}, keep=1)
    before = sorted(os.listdir(run))

    def no_space(f, data):
        f.write(data[:10])
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(checkpoint, '_write', no_space)
    with pytest.raises(OSError, match='previous checkpoint is still current') as info:
        checkpoint.save_rotating(run, 2, {'x': np.full(1, 2.0)}, keep=1)
    assert run in str(info.value) and info.value.errno == 28
    assert sorted(os.listdir(run)) == before  # nothing deleted, no temporary left
    assert checkpoint.latest_readable(run)[0].endswith('checkpoint-00000001.qvmc')
    assert checkpoint.load(os.path.join(run, 'checkpoint.qvmc'))["['x']"][0] == 1

    def killed(f, data):
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint, '_write', killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_rotating(run, 3, {'x': np.ones(1)}, keep=1)
    assert sorted(os.listdir(run)) == before


def test_permission_error_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = str(tmp_path)
    checkpoint.save_rotating(run, 1, {'x': np.ones(1)}, keep=1)

    def denied(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(checkpoint.tempfile, 'mkstemp', denied)  # what a read-only directory does
    with pytest.raises(PermissionError, match='previous checkpoint is still current') as info:
        checkpoint.save_rotating(run, 2, {'x': np.ones(1)}, keep=1)
    assert run in str(info.value)
    assert sorted(os.listdir(run)) == ['checkpoint-00000001.qvmc', 'checkpoint.qvmc']


def test_read_only_directory(tmp_path):
    run = tmp_path / 'run'
    checkpoint.save_rotating(str(run), 1, {'x': np.ones(1)})
    os.chmod(run, 0o555)
    try:
        try:
            open(run / 'probe', 'w').close()
        except PermissionError:
            pass
        else:
            pytest.skip('chmod does not stop this user (root?) from writing')
        with pytest.raises(OSError, match='previous checkpoint is still current'):
            checkpoint.save_rotating(str(run), 2, {'x': np.ones(1)})
        assert [s for s, _ in checkpoint.list_checkpoints(str(run))] == [1]
    finally:
        os.chmod(run, 0o755)
