"""`istanet_jax.export`: each format written, reloaded from disk and run like the in-memory
model; checkpoints of another config, missing files and unknown formats rejected in one line."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import demo
from istanet_jax import checkpoints, export, steps, torch_compat
from istanet_jax.torch_compat import CheckpointMismatchError

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_BLOCKS = ((8, 8, 4), (8, 16, 4))


def tiny_config():
  config = ml_collections.ConfigDict(demo.get_config().to_dict())
  config.model.config = TINY_BLOCKS
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny model's variables, saved as a reference .pt and as an Orbax checkpoint (step 5)."""
  root = tmp_path_factory.mktemp('export')
  config = tiny_config()
  model = steps.model_from_config(config)
  tx = steps.make_optimizer(config, steps_per_epoch=1)
  state = steps.create_state(model, tx, jax.random.key(1))
  # Running statistics away from (0, 1), so a BatchNorm that ignored them would show.
  keys = iter(jax.random.split(jax.random.key(2), 64))
  perturb = {'running_mean': lambda k, a: 0.3 * jax.random.normal(k, a.shape),
             'running_var': lambda k, a: 0.5 + jax.random.uniform(k, a.shape)}
  state['batch_stats'] = jax.tree_util.tree_map_with_path(
      lambda p, a: perturb.get(p[-1].key, lambda k, a: a)(next(keys), a), state['batch_stats'])
  variables = steps.variables_of(state)
  pt = str(root / 'ref.pt')
  state_dict = torch_compat.state_dict_from_variables(variables, config.model.to_dict())
  torch_compat.save_pt(state_dict, pt)
  ckpt = checkpoints.Checkpointer(str(root / 'best'), use_async=False)
  ckpt.save(5, state, {'epoch': 5})
  ckpt.close()
  return dict(root=root, config=config, model=model, variables=variables, pt=pt,
              orbax=str(root / 'best'))


def in_memory_logits(trained, batch):
  x = export.random_batch(trained['model'], batch, seed=100 + batch)
  return x, np.asarray(jax.jit(export.forward_fn(trained['model'], trained['variables']))(x))


def assert_same_logits(got, want):
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_stablehlo_from_orbax_reloads_with_any_batch_size(trained):
  out = str(trained['root'] / 'model.stablehlo')
  lines = export.export(trained['config'], trained['orbax'], 'stablehlo', out)
  assert any('batch of 2' in l for l in lines) and any('batch of 3' in l for l in lines)
  loaded = export.load_stablehlo(out)
  for batch in (2, 3):
    x, want = in_memory_logits(trained, batch)
    got = loaded(x)
    assert got.shape == (batch, 8) and got.dtype == jnp.float32
    assert_same_logits(got, want)


def test_savedmodel_from_pt_reloads_with_tf(trained):
  out = str(trained['root'] / 'savedmodel')
  lines = export.export(trained['config'], trained['pt'], 'savedmodel', out, batch_size=3)
  assert 'tf.saved_model.load' in lines[-1]
  x, want = in_memory_logits(trained, 3)
  assert_same_logits(export.load_savedmodel(out)(x), want)


def test_pt_from_orbax_step_is_the_reference_state_dict(trained):
  out = str(trained['root'] / 'exported.pt')
  export.export(trained['config'], trained['orbax'] + '/5', 'pt', out)
  state_dict = torch_compat.load_pt(out)
  assert list(state_dict) == list(torch_compat.reference_keys(trained['config'].model.to_dict()))
  reloaded = torch_compat.variables_from_state_dict(state_dict, trained['config'].model.to_dict())
  jax.tree_util.tree_map(np.testing.assert_array_equal, reloaded, trained['variables'])
  x, want = in_memory_logits(trained, 2)
  assert_same_logits(jax.jit(export.forward_fn(trained['model'], reloaded))(x), want)


def test_verification_catches_an_export_that_differs(trained):
  out = str(trained['root'] / 'other.stablehlo')
  export.export_stablehlo(trained['model'], trained['variables'], out)
  other = jax.tree_util.tree_map(lambda a: a * 1.01, trained['variables'])
  with pytest.raises(export.ExportVerificationError, match='differ from the in-memory model'):
    export.verify_stablehlo(trained['model'], other, out)


def test_checkpoints_of_another_config_are_rejected(trained):
  config = demo.get_config()  # 32/64-channel blocks: the tiny checkpoints do not fit
  for checkpoint in (trained['pt'], trained['orbax']):
    pattern = '(?s)' + re.escape(checkpoint) + r': .*expected shape \(32,\)'
    with pytest.raises(CheckpointMismatchError, match=pattern):
      export.load_variables(config, checkpoint)
  assert os.listdir(trained['orbax']) == ['5']  # left where it was, not moved aside as corrupt


def test_bad_arguments_are_rejected(trained, tmp_path):
  out = str(tmp_path / 'x')
  with pytest.raises(ValueError,
                     match="unknown format; choose one of stablehlo, savedmodel, onnx, pt"):
    export.export(trained['config'], trained['pt'], 'tflite', out)
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}/nope.pt: no such file'):
    export.export(trained['config'], str(tmp_path / 'nope.pt'), 'pt', out)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='no Orbax checkpoint steps'):
    export.export(trained['config'], str(tmp_path / 'empty'), 'stablehlo', out)
  (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
  with pytest.raises(ValueError, match='junk.pt: not a readable PyTorch checkpoint'):
    export.export(trained['config'], str(tmp_path / 'junk.pt'), 'pt', out)
  with pytest.raises(ValueError, match=r'--platforms cpu,gpu: choose from cpu, cuda, rocm, tpu '
                                       r'\(a GPU is cuda or rocm\)'):
    export.export(trained['config'], trained['pt'], 'stablehlo', out, platforms=['cpu', 'gpu'])
  with pytest.raises(ValueError, match='exists and is not a directory'):
    export.export(trained['config'], trained['pt'], 'savedmodel', trained['pt'])
  assert not os.path.exists(out)
  # For another platform only: written, not reloaded here (it cannot run), and said so.
  lines = export.export(trained['config'], trained['pt'], 'stablehlo', out, platforms=['cuda'])
  assert os.path.isfile(out) and lines[-1] == 'not reloaded: exported for cuda, this host runs cpu'


def _cli(tmp_path, *args):
  config = tmp_path / 'tiny.py'
  config.write_text(textwrap.dedent(f"""\
      from configs import demo

      def get_config(arg=''):
        config = demo.get_config(arg)
        config.unlock()
        config.model.config = {TINY_BLOCKS!r}
        return config
      """))
  return subprocess.run([sys.executable, '-m', 'istanet_jax.export', f'--config={config}', *args],
                        cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_writes_and_verifies(trained, tmp_path):
  out = tmp_path / 'cli.pt'
  result = _cli(tmp_path, f'--checkpoint={trained["orbax"]}', '--format=pt', f'--out={out}')
  assert result.returncode == 0, result.stderr
  assert f'reloaded {out} with torch_compat.load_pt: batch of 2' in result.stdout
  assert out.is_file()


@pytest.mark.parametrize('args, message', [
    (('--format=pt', '--checkpoint=/nonexistent/best.pt'),
     '/nonexistent/best.pt: no such file or directory'),
    (('--format=tflite', '--checkpoint=/nonexistent/best.pt'),
     "--format 'tflite': unknown format"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
  result = _cli(tmp_path, *args, f'--out={tmp_path / "out"}')
  assert result.returncode == 2
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert len([l for l in result.stderr.splitlines() if l.startswith('error:')]) == 1


def test_cli_mismatch_is_one_line(trained, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'istanet_jax.export', '--config=configs/demo.py',
       f'--checkpoint={trained["pt"]}', '--format=stablehlo', f'--out={tmp_path / "out"}'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'Traceback' not in result.stderr
  assert f'error: {trained["pt"]}: state dict does not fit the model' in errors[0]


# --------------------------------------------------------------------------- ONNX


@pytest.fixture(scope='module')
def onnx_export(trained, tmp_path_factory):
  """The tiny model exported to ONNX by the command line, from the reference .pt."""
  tmp_path = tmp_path_factory.mktemp('onnx')
  out = tmp_path / 'model.onnx'
  result = _cli(tmp_path, f'--checkpoint={trained["pt"]}', '--format=onnx', f'--out={out}')
  return out, result


def test_onnx_cli_writes_and_verifies_with_dynamic_batch(onnx_export):
  out, result = onnx_export
  assert result.returncode == 0, result.stderr
  for n in (2, 3):
    assert f'reloaded {out} in onnxruntime: batch of {n} gives the in-memory' in result.stdout
  import onnx  # pylint: disable=g-import-not-at-top
  proto = onnx.load(str(out))
  onnx.checker.check_model(proto)
  assert [(o.domain, o.version) for o in proto.opset_import] == [('', export.ONNX_OPSET)]
  (x,), (logits,) = proto.graph.input, proto.graph.output
  dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
  assert (x.name, dims(x)) == ('x', ['B', 3, 40, 15, 2])
  assert (logits.name, dims(logits)) == ('logits', ['B', 8])


def test_onnx_reloads_with_other_batch_sizes(trained, onnx_export):
  loaded = export.load_onnx(onnx_export[0])
  for batch in (1, 5):
    x, want = in_memory_logits(trained, batch)
    got = loaded(x)
    assert got.shape == (batch, 8) and got.dtype == np.float32
    # onnxruntime's kernels sum in other orders than XLA's (measured 3e-7 of the largest logit).
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_onnx_verification_catches_an_export_that_differs(trained, onnx_export):
  other = jax.tree_util.tree_map(lambda a: a * 1.01, trained['variables'])
  with pytest.raises(export.ExportVerificationError, match='differ from the in-memory model'):
    export.verify_onnx(trained['model'], other, onnx_export[0])


def test_onnx_bad_input_and_missing_package(trained, tmp_path, monkeypatch):
  junk = tmp_path / 'junk.onnx'
  junk.write_bytes(b'not a model')
  with pytest.raises(ValueError, match=f'{junk}: not an ONNX model onnxruntime can load'):
    export.load_onnx(junk)
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}/nope.onnx: no such file'):
    export.load_onnx(tmp_path / 'nope.onnx')
  with pytest.raises(ValueError, match='ONNX export computes in float32, not bfloat16'):
    export.export_onnx(trained['model'].clone(dtype=jnp.bfloat16), trained['variables'],
                       str(tmp_path / 'bf16.onnx'))
  assert not (tmp_path / 'bf16.onnx').exists()
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)  # as if not installed
  with pytest.raises(ImportError, match=re.escape(export.ONNX_INSTALL)):
    export.export(trained['config'], trained['pt'], 'onnx', str(tmp_path / 'out.onnx'))
  assert not (tmp_path / 'out.onnx').exists()
