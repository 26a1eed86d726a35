r"""Exporting a trained model for inference: StableHLO, TF SavedModel, ONNX or a reference `.pt`.

  python -m istanet_jax.export --config configs/demo.py \
      --checkpoint /tmp/istanet_demo/best --format stablehlo --out /tmp/demo.stablehlo
  python -m istanet_jax.export --config configs/ntu26.py:xsub --checkpoint best.pt \
      --format savedmodel --out /tmp/ntu26_savedmodel --batch_size 16
  python -m istanet_jax.export --config configs/demo.py --checkpoint /tmp/istanet_demo/best \
      --format onnx --out /tmp/demo.onnx
  python -m istanet_jax.export --config configs/demo.py --checkpoint /tmp/istanet_demo/best \
      --format pt --out /tmp/demo.pt [--reference_dir /path/to/ISTA-Net]

Every format exports the eval-mode forward pass: x in the reference's layout (N, C, T, V, M),
float32 -> float32 logits (N, num_classes), BatchNorm on its running statistics. `--checkpoint`
is an Orbax directory of this project (`workdir/best`, `workdir/checkpoints`: its newest step),
one step of it, or a reference `.pt` state dict. Each export is reloaded from disk and run on
a random batch against the in-memory model before the command reports success.

  stablehlo   `jax.export` with a symbolic batch size and the weights baked in, serialized;
              `load_stablehlo(path)` gives a callable (no model code or config needed).
  savedmodel  `jax2tf` with a fixed batch size (TF 2.21 cannot run a symbolic batch as
              current JAX exports it), weights as TF variables; serving signature `x`->`logits`.
  onnx        `jax2onnx`, opset 17, batch size dynamic (`B`), weights as initializers; input `x`,
              output `logits`; checked in onnxruntime. An optional extra: jax2onnx pins an older
              orbax in its metadata but never imports it, so it is installed without its
              dependencies (see ONNX_INSTALL).
  pt          the reference's state dict (`torch.save`), loadable by its `model/ISTANet.py`.

TensorFlow, torch, jax2onnx and onnxruntime are imported only by the formats that need them.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from istanet_jax import files, steps
from istanet_jax.model import ISTANet, apply_model
from istanet_jax.torch_compat import CheckpointMismatchError

FORMATS = ('stablehlo', 'savedmodel', 'onnx', 'pt')
# Where the export runs the same XLA program as the in-memory model (StableHLO, SavedModel),
# only fusion and reduction order may differ.
RTOL = 1e-5
# PyTorch's kernels sum in other orders than XLA's: measured ~2e-7 of the largest logit on the
# demo model; a wrong key or layout moves logits by ~1e-1.
TORCH_RTOL = 1e-4
DEFAULT_PLATFORMS = ('cpu', 'cuda', 'tpu')
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # jax.export's names
# onnxruntime's kernels (MatMul, Conv, Einsum) sum in other orders than XLA's: measured 3e-7
# (tiny test model) and 8e-7 (full NTU Mutual 26 model) of the largest logit.
ONNX_RTOL = 1e-4
# Opset 17 rather than jax2onnx's default 23, so that runtimes of 2022 on load it (the file's IR
# version is 10 all the same, i.e. an ONNX >= 1.16 reader); the model needs no newer operator.
ONNX_OPSET = 17
# jax2onnx's metadata asks for orbax-checkpoint<0.11.37 (and equinox, dm-pix, netron, ...), none
# of which its conversion of a plain jax function imports; installed without them.
ONNX_INSTALL = "pip install -e '.[onnx]' && pip install --no-deps jax2onnx==0.17.1"


class ExportVerificationError(RuntimeError):
  """The exported model, reloaded, does not compute what the in-memory model computes."""


# --------------------------------------------------------------------------- checkpoints


def load_variables(config: ml_collections.ConfigDict, checkpoint: str) -> dict:
  """Flax variables {'params', 'batch_stats'[, 'buffers']} of `checkpoint` for `config`'s model.

  `checkpoint`: a reference `.pt` file, an Orbax directory of this project (its newest step)
  or one step directory of it. Raises FileNotFoundError (no such file), ValueError (not a
  checkpoint) or CheckpointMismatchError (another model), each naming `checkpoint`.
  """
  path = os.path.abspath(os.fspath(checkpoint))
  if not os.path.exists(path):
    raise FileNotFoundError(f'{checkpoint}: no such file or directory')
  if os.path.isfile(path):
    from istanet_jax import torch_compat  # pylint: disable=g-import-not-at-top
    return torch_compat.load_reference_checkpoint(path, config.model.to_dict())[1]
  return _load_orbax(config, checkpoint, path)


def _load_orbax(config, checkpoint: str, path: str) -> dict:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  step = os.path.basename(path)
  if step.isdigit():
    if not os.path.isdir(os.path.join(path, 'state')):
      raise ValueError(f'{checkpoint}: not an Orbax checkpoint step (no state/ inside)')
    directory, steps_found = os.path.dirname(path), [int(step)]
  else:
    directory = path
    # Finished steps only: Orbax writes into a temporary directory and renames it when done.
    steps_found = sorted(int(d) for d in os.listdir(path)
                         if d.isdigit() and os.path.isdir(os.path.join(path, d, 'state')))
    if not steps_found:
      raise ValueError(f'{checkpoint}: no Orbax checkpoint steps (<step>/state/) inside')
  # A bare manager, not `checkpoints.Checkpointer`: its fallback moves checkpoints that do not
  # restore aside, and one that merely belongs to another config must be left where it is.
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, enable_async_checkpointing=False), item_names=('state', 'meta'))
  try:
    # Restored as stored (no target tree): the optimiser state's structure does not matter here,
    # and a checkpoint of another model is then reported key by key, not as an Orbax error.
    # The fallback places arrays saved on another topology (e.g. 8 devices) on one device here.
    restored = manager.restore(steps_found[-1], args=ocp.args.Composite(
        state=ocp.args.StandardRestore(
            None, fallback_sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))))
  except Exception as e:  # orbax/tensorstore raise many types for damaged files
    first = str(e).splitlines()[0] if str(e) else ''
    raise ValueError(f'{checkpoint}: step {steps_found[-1]} does not restore '
                     f'({type(e).__name__}: {first})') from e
  finally:
    manager.close()
  state = restored['state']
  if not isinstance(state, dict) or 'params' not in state or 'batch_stats' not in state:
    raise ValueError(f'{checkpoint}: not a training state of this project (no params/batch_stats)')
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  if state.get('buffers'):
    variables['buffers'] = state['buffers']
  try:
    _check_fits(steps.model_from_config(config), variables)
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f'{checkpoint}: {e}') from None
  return jax.tree_util.tree_map(jnp.asarray, variables)


def _check_fits(model: ISTANet, variables: dict) -> None:
  """Raises CheckpointMismatchError naming each variable missing, unexpected or mis-shaped."""
  template = model.variable_shapes()
  # Named collection/key, the key as in the reference's state dict (`blocks.0.FFN.1.running_var`).
  want = {f'{c}/{".".join(p)}': v.shape for c, t in template.items()
          for p, v in flax.traverse_util.flatten_dict(t).items()}
  have = {f'{c}/{".".join(p)}': np.shape(v) for c, t in variables.items()
          for p, v in flax.traverse_util.flatten_dict(dict(t)).items()}
  problems = [f'unexpected variable {k} (shape {have[k]})' for k in sorted(set(have) - set(want))]
  problems += [f'missing variable {k} (expected shape {want[k]})'
               for k in sorted(set(want) - set(have))]
  problems += [f'variable {k}: expected shape {want[k]}, found {have[k]}'
               for k in sorted(set(want) & set(have)) if tuple(want[k]) != tuple(have[k])]
  if problems:
    listed = '\n  '.join(problems[:12])
    more = f'\n  ... and {len(problems) - 12} more' if len(problems) > 12 else ''
    raise CheckpointMismatchError(
        f'checkpoint does not fit the model of the config ({len(problems)} problem(s)) - is it '
        f'a checkpoint of another config (blocks, heads, window, classes)?:\n  {listed}{more}')


# --------------------------------------------------------------------------- the forward pass


def _reference_input_shape(model: ISTANet, batch) -> tuple:
  """(N, C, T, V, M): the reference's layout, which exported models take."""
  return (batch, model.num_channels, model.num_frames, model.num_joints, model.num_persons)


def forward_fn(model: ISTANet, variables: dict) -> Callable:
  """x (N, C, T, V, M) float32 -> float32 logits, eval mode, `variables` closed over."""
  def forward(x):
    return apply_model(model, variables, x, train=False)[0].astype(jnp.float32)
  return forward


def random_batch(model: ISTANet, batch: int, seed: int = 0) -> np.ndarray:
  """A reproducible float32 batch in the reference layout, at the scale of skeleton coordinates."""
  shape = _reference_input_shape(model, batch)
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _compare(name: str, got, want, rtol: float) -> float:
  """Max |got - want| relative to max |want|; raises ExportVerificationError beyond `rtol`."""
  got, want = np.asarray(got), np.asarray(want)
  if got.shape != want.shape or got.dtype != np.float32:
    raise ExportVerificationError(f'{name}: logits of shape {got.shape} {got.dtype}, '
                                  f'expected {want.shape} float32')
  scale = max(float(np.abs(want).max()), 1e-30)
  err = float(np.abs(got - want).max()) / scale
  # Relative to the largest logit, not elementwise: a logit near zero carries its row's error.
  if not np.isfinite(got).all() or err > rtol:
    raise ExportVerificationError(f'{name}: logits differ from the in-memory model by {err:.3g} '
                                  f'of the largest logit (tolerance {rtol:g})')
  return err


def _atomic_write(path: str, data: bytes) -> None:
  with files.atomic_path(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)


# --------------------------------------------------------------------------- StableHLO


def export_stablehlo(model: ISTANet, variables: dict, path: str, *,
                     platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
  """Serializes the forward pass, batch size symbolic (`b`), weights baked in, to `path`."""
  (b,) = jax.export.symbolic_shape('b')
  x = jax.ShapeDtypeStruct(_reference_input_shape(model, b), jnp.float32)
  exported = jax.export.export(jax.jit(forward_fn(model, variables)),
                               platforms=tuple(platforms))(x)
  _atomic_write(path, bytes(exported.serialize()))
  return exported


def load_stablehlo(path: str) -> Callable:
  """x (N, C, T, V, M) float32 -> logits, from a file `export_stablehlo` wrote."""
  path = os.fspath(path)
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: no such file') from None
  try:
    exported = jax.export.deserialize(bytearray(data))
  except Exception as e:  # flatbuffer decoding raises many types for a foreign file
    raise ValueError(f'{path}: not a serialized jax.export module ({type(e).__name__})') from e
  return jax.jit(exported.call)


def verify_stablehlo(model: ISTANet, variables: dict, path: str,
                     batch_sizes: Sequence[int] = (2, 3)) -> list:
  return _verify_batches(model, variables, path, load_stablehlo(path), RTOL, batch_sizes, '')


def _verify_batches(model, variables, path, loaded, rtol, batch_sizes, where) -> list:
  """Runs a reloaded export at several batch sizes against the in-memory model."""
  forward = jax.jit(forward_fn(model, variables))
  lines = []
  for n in batch_sizes:
    x = random_batch(model, n, seed=n)
    err = _compare(f'{path} (batch {n})', loaded(x), forward(x), rtol)
    lines.append(f'reloaded {path}{where}: batch of {n} gives the in-memory logits '
                 f'(max diff {err:.2g} of the largest logit)')
  return lines


# --------------------------------------------------------------------------- TF SavedModel


def export_savedmodel(model: ISTANet, variables: dict, path: str, batch_size: int, *,
                      platforms: Sequence[str] = DEFAULT_PLATFORMS) -> None:
  """`tf.saved_model.save` of the jax2tf-converted forward pass for batches of `batch_size`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top

  leaves, treedef = jax.tree_util.tree_flatten(variables)

  def forward(weights, x):
    return forward_fn(model, jax.tree_util.tree_unflatten(treedef, weights))(x)

  module = tf.Module()
  # Variables rather than constants: they are stored in variables/, as TF serving expects, and
  # the serialized module stays small.
  module.weights = [tf.Variable(np.asarray(l), trainable=False) for l in leaves]
  converted = jax2tf.convert(forward, native_serialization_platforms=tuple(platforms),
                             with_gradient=False)
  spec = tf.TensorSpec(_reference_input_shape(model, batch_size), tf.float32, name='x')

  @tf.function(input_signature=[spec], autograph=False)
  def serve(x):
    return {'logits': converted(module.weights, x)}

  module.serve = serve
  tf.saved_model.save(module, path, signatures={'serving_default': serve})


def load_savedmodel(path: str) -> Callable:
  """x -> logits (numpy) from a SavedModel `export_savedmodel` wrote, via its serving signature."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(path):
    raise FileNotFoundError(f'{path}: no such SavedModel directory')
  loaded = tf.saved_model.load(path)
  serve = loaded.signatures['serving_default']
  return lambda x: serve(x=tf.constant(np.asarray(x, np.float32)))['logits'].numpy()


def verify_savedmodel(model: ISTANet, variables: dict, path: str, batch_size: int) -> list:
  x = random_batch(model, batch_size)
  err = _compare(path, load_savedmodel(path)(x), jax.jit(forward_fn(model, variables))(x), RTOL)
  return [f'reloaded {path} with tf.saved_model.load: batch of {batch_size} gives the in-memory '
          f'logits (max diff {err:.2g} of the largest logit)']


# --------------------------------------------------------------------------- ONNX


def _import_onnx():
  """(jax2onnx, onnxruntime), or ImportError saying how to install them."""
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'--format onnx needs onnxruntime ({e}); install with: '
                      f'{ONNX_INSTALL}') from None
  # Converting a plain function needs no equinox/dm_pix plugins; jax2onnx logs a traceback for
  # each such plugin it cannot import, which says nothing about this model.
  logging.getLogger('jax2onnx.plugins.plugin_system').setLevel(logging.ERROR)
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'--format onnx needs jax2onnx ({e}); install with: '
                      f'{ONNX_INSTALL}') from None
  return jax2onnx, onnxruntime


def export_onnx(model: ISTANet, variables: dict, path: str, *, opset: int = ONNX_OPSET) -> None:
  """Writes the forward pass as an ONNX model to `path`: input `x` (B, C, T, V, M), B dynamic."""
  if model.dtype is not None and jnp.dtype(model.dtype).itemsize < 4:
    # onnxruntime has no bf16 Einsum, and the CPU's bf16 path is chosen per platform at tracing.
    raise ValueError(f'ONNX export computes in float32, not {jnp.dtype(model.dtype).name}: '
                     'export with --config.dtype=float32')
  jax2onnx, _ = _import_onnx()
  onnx_ir_log = logging.getLogger('onnx_ir')
  level = onnx_ir_log.level
  # onnx_ir warns, per intermediate value, that it leaves out value_info whose type jax2onnx did
  # not record (hundreds of lines for the NTU model); the graph itself is complete.
  onnx_ir_log.setLevel(logging.ERROR)
  try:
    proto = jax2onnx.to_onnx(forward_fn(model, variables),
                             [('B',) + _reference_input_shape(model, 1)[1:]], model_name='istanet',
                             opset=opset, input_names=['x'], output_names=['logits'])
  finally:
    onnx_ir_log.setLevel(level)
  _atomic_write(path, proto.SerializeToString())


def load_onnx(path: str) -> Callable:
  """x (N, C, T, V, M) float32 -> logits (numpy), from a file `export_onnx` wrote (onnxruntime)."""
  _, onnxruntime = _import_onnx()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file')
  try:
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
  except Exception as e:  # onnxruntime raises its own types for a foreign or damaged file
    first = str(e).splitlines()[0] if str(e) else ''
    raise ValueError(f'{path}: not an ONNX model onnxruntime can load ({type(e).__name__}: '
                     f'{first})') from e
  return lambda x: session.run(['logits'], {'x': np.asarray(x, np.float32)})[0]


def verify_onnx(model: ISTANet, variables: dict, path: str,
                batch_sizes: Sequence[int] = (2, 3)) -> list:
  return _verify_batches(model, variables, path, load_onnx(path), ONNX_RTOL, batch_sizes,
                         ' in onnxruntime')


# --------------------------------------------------------------------------- reference .pt


def export_pt(model_args: dict, variables: dict, path: str) -> None:
  from istanet_jax import torch_compat  # pylint: disable=g-import-not-at-top
  torch_compat.save_pt(torch_compat.state_dict_from_variables(variables, model_args), path)


def reference_logits(reference_dir: str, model_args: dict, pt_path: str,
                     x: np.ndarray) -> np.ndarray:
  """The reference's `model/ISTANet.py` (from a checkout) on `x`, weights from `pt_path`."""
  import torch  # pylint: disable=g-import-not-at-top

  reference_dir = os.path.abspath(reference_dir)
  if not os.path.isfile(os.path.join(reference_dir, 'model', 'ISTANet.py')):
    raise FileNotFoundError(f'{reference_dir}: no model/ISTANet.py (not an ISTA-Net checkout)')
  loaded = sys.modules.get('model')
  if loaded is not None and not os.path.abspath(getattr(loaded, '__file__', '') or '').startswith(
      reference_dir):
    raise ValueError(f'another module named `model` is already imported ({loaded}); cannot '
                     f'import {reference_dir}/model/ISTANet.py')
  sys.path.insert(0, reference_dir)
  try:
    reference = importlib.import_module('model.ISTANet')
  finally:
    sys.path.remove(reference_dir)
  args = dict(model_args)
  args['config'] = [list(b) for b in args['config']]
  net = reference.Model(**args)
  state_dict = torch.load(pt_path, map_location='cpu', weights_only=True)
  net.load_state_dict(state_dict, strict=True)
  net.eval()
  with torch.no_grad():
    return net(torch.from_numpy(x)).numpy()


def verify_pt(model: ISTANet, model_args: dict, variables: dict, path: str,
              reference_dir: Optional[str] = None, batch_size: int = 2) -> list:
  from istanet_jax import torch_compat  # pylint: disable=g-import-not-at-top

  x = random_batch(model, batch_size)
  want = jax.jit(forward_fn(model, variables))(x)
  reloaded = torch_compat.variables_from_state_dict(torch_compat.load_pt(path), model_args)
  err = _compare(path, jax.jit(forward_fn(model, reloaded))(x), want, RTOL)
  lines = [f'reloaded {path} with torch_compat.load_pt: batch of {batch_size} gives the '
           f'in-memory logits (max diff {err:.2g} of the largest logit)']
  if reference_dir:
    got = reference_logits(reference_dir, model_args, path, x)
    err = _compare(f'{path} in the reference model', got.astype(np.float32), want, TORCH_RTOL)
    lines.append(f'loaded {path} into {reference_dir}/model/ISTANet.py (strict=True): batch of '
                 f'{batch_size} gives the in-memory logits (max diff {err:.2g} of the largest '
                 f'logit)')
  return lines


# --------------------------------------------------------------------------- all together


def export(config: ml_collections.ConfigDict, checkpoint: str, fmt: str, out: str, *,
           batch_size: Optional[int] = None, reference_dir: Optional[str] = None,
           platforms: Sequence[str] = DEFAULT_PLATFORMS) -> list:
  """Exports `checkpoint` (of `config`'s model) as `fmt` to `out`, reloads it, checks its logits.

  `batch_size`: the SavedModel's fixed batch size (default `config.test_batch_size`).
  Returns the lines saying what was verified; raises ExportVerificationError if a check fails.
  """
  if fmt not in FORMATS:
    raise ValueError(f'--format {fmt!r}: unknown format; choose one of {", ".join(FORMATS)}')
  if batch_size is not None and batch_size < 1:
    raise ValueError(f'--batch_size {batch_size}: must be at least 1')
  if reference_dir and fmt != 'pt':
    raise ValueError('--reference_dir only applies to --format pt')
  unknown = [p for p in platforms if p not in PLATFORMS]
  if not platforms or unknown:
    hint = ' (a GPU is cuda or rocm)' if 'gpu' in unknown else ''
    raise ValueError(f'--platforms {",".join(platforms)}: choose from {", ".join(PLATFORMS)}'
                     f'{hint}')
  if fmt == 'savedmodel' and os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f'--out {out}: exists and is not a directory (a SavedModel is one)')
  if fmt != 'savedmodel' and os.path.isdir(out):
    raise ValueError(f'--out {out}: a directory; {fmt} writes a file')
  if fmt == 'onnx':
    _import_onnx()  # a missing package is reported before the checkpoint is read
  model = steps.model_from_config(config)
  variables = load_variables(config, checkpoint)
  model_args = config.model.to_dict()
  lines = [f'exported {checkpoint} as {fmt} to {out}']
  # An export for other platforms only cannot run here, so it is written but not reloaded.
  local = jax.default_backend()
  runs_here = local in platforms or (local == 'gpu' and {'cuda', 'rocm'} & set(platforms))
  not_here = [f'not reloaded: exported for {",".join(platforms)}, this host runs {local}']
  if fmt == 'stablehlo':
    export_stablehlo(model, variables, out, platforms=platforms)
    lines += verify_stablehlo(model, variables, out) if runs_here else not_here
  elif fmt == 'savedmodel':
    batch_size = batch_size or config.test_batch_size
    export_savedmodel(model, variables, out, batch_size, platforms=platforms)
    lines += verify_savedmodel(model, variables, out, batch_size) if runs_here else not_here
  elif fmt == 'onnx':
    export_onnx(model, variables, out)
    lines += verify_onnx(model, variables, out)
  else:
    export_pt(model_args, variables, out)
    lines += verify_pt(model, model_args, variables, out, reference_dir)
  return lines


def main(argv=None) -> None:
  from istanet_jax import host  # pylint: disable=g-import-not-at-top
  host.configure()
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file('config', None,
                                  'experiment config file (configs/<name>.py[:arg])',
                                  lock_config=True)
  flags.DEFINE_string('checkpoint', None, 'an Orbax checkpoint dir (or one step of it) or a '
                      'reference .pt file')
  # A string, not an enum: a bad value then gets our one-line error, not absl's usage dump.
  flags.DEFINE_string('format', None, f'one of {", ".join(FORMATS)}')
  flags.DEFINE_string('out', None, 'the file (stablehlo, onnx, pt) or directory (savedmodel) '
                      'to write')
  flags.DEFINE_integer('batch_size', None, 'savedmodel: the fixed batch size '
                       '(default: the config\'s test_batch_size)')
  flags.DEFINE_string('reference_dir', None, 'pt: a checkout of the reference ISTA-Net; the '
                      'written .pt is also checked in its model/ISTANet.py')
  flags.DEFINE_list('platforms', list(DEFAULT_PLATFORMS), 'stablehlo, savedmodel: the platforms '
                    'to lower for')
  flags.mark_flags_as_required(['config', 'checkpoint', 'format', 'out'])

  def run(_):
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.WARNING)
    f = flags.FLAGS
    try:
      lines = export(f.config, f.checkpoint, f.format, f.out, batch_size=f.batch_size,
                     reference_dir=f.reference_dir, platforms=f.platforms)
    except ExportVerificationError as e:
      _fail(e, 1)
    # Bad input or a missing optional package; CheckpointMismatchError is a ValueError.
    except (OSError, ValueError, ImportError) as e:
      _fail(e, 2)
    for line in lines:
      print(line, flush=True)

  app.run(run, argv=argv, flags_parser=host.parse_flags)


def _fail(error: Exception, code: int) -> None:
  # One line: a mismatch lists its keys on further lines, which stay readable joined.
  message = '; '.join(l.strip() for l in str(error).splitlines() if l.strip())
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


if __name__ == '__main__':
  main()
