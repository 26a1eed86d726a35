"""The reference's checkpoints: model_args -> model, state dicts <-> Flax variables, `.pt` files.

A reference state dict (as `torch.save(model.state_dict())` writes it, keys such as
`blocks.3.proj.0.weight`, optionally prefixed `module.` by DataParallel) maps one to one onto
our variables: the key is the variable path joined with '.', and only the layout of conv and
linear weights and of the positional-encoding buffer differs (see `istanet_jax.model`).
torch is imported only by `load_pt` / `save_pt`.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Iterator, Mapping, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from istanet_jax import files
from istanet_jax.model import ISTANet

REFERENCE_ARGS = ('window_size', 'num_classes', 'num_joints', 'num_frames', 'num_persons',
                  'num_heads', 'num_channels', 'kernel_size', 'use_pes', 'config', 'att_drop',
                  'dropout')
# Keys PyTorch may or may not have stored: BatchNorm's counter (absent before torch 0.4.1) and
# the positional-encoding table (absent when saved without buffers; then it is recomputed).
OPTIONAL_SUFFIXES = ('num_batches_tracked', 'pes.pe')
_MAX_LISTED = 12


class CheckpointMismatchError(ValueError):
  """A state dict that does not fit the model: missing, unexpected or mis-shaped keys."""


def model_from_reference_args(model_args: Mapping[str, Any], dtype=None, **kwargs) -> ISTANet:
  """ISTANet from the `model_args` section of a reference YAML config.

  kwargs are our own model options (`precision`, `bn_group_size`, `conv_algorithm`,
  `matmul_outputs`).
  """
  unknown = sorted(set(model_args) - set(REFERENCE_ARGS))
  if unknown:
    raise ValueError(f'unknown model_args {unknown}; the reference takes {list(REFERENCE_ARGS)}')
  args = dict(model_args)
  if 'config' not in args:
    raise ValueError('model_args needs `config` (the list of [in, out, qkv_dim] blocks)')
  args['window_size'] = tuple(args['window_size'])
  args['kernel_size'] = tuple(args['kernel_size'])
  args['config'] = tuple(tuple(b) for b in args['config'])
  return ISTANet(**args, dtype=dtype, **kwargs)


def reference_keys(model_args: Mapping[str, Any]) -> Iterator[str]:
  """The reference model's state-dict keys in `state_dict()` order."""
  bn = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
  conv_bn = lambda prefix: [f'{prefix}.0.weight', f'{prefix}.0.bias'] + [f'{prefix}.1.{k}' for k in bn]
  yield from conv_bn('embed')
  for i, (cin, cout, _) in enumerate(model_args['config']):
    b = f'blocks.{i}'
    yield from (f'{b}.alpha', f'{b}.M')
    if model_args.get('use_pes', True):
      yield f'{b}.pes.pe'
    yield from (f'{b}.to_qkvs.weight', f'{b}.to_qkvs.bias')
    for name in ('proj', 'FFN', 'TA') + (('residual', 'residual_TA') if cin != cout else ()):
      yield from conv_bn(f'{b}.{name}')
  yield from ('fc.weight', 'fc.bias')


def _to_torch_layout(name: str, value: np.ndarray) -> np.ndarray:
  if name == 'weight' and value.ndim == 5:  # (kt, kj, ku, in, out) -> (out, in, kt, kj, ku)
    return value.transpose(4, 3, 0, 1, 2)
  if name == 'weight' and value.ndim == 2:  # (in, out) -> (out, in)
    return value.T
  if name == 'pe':  # (1, Tw, JE, U, C) -> (1, C, Tw, JE, U)
    return value.transpose(0, 4, 1, 2, 3)
  return value


def _from_torch_layout(name: str, value: np.ndarray) -> np.ndarray:
  if name == 'weight' and value.ndim == 5:
    return value.transpose(2, 3, 4, 1, 0)
  if name == 'weight' and value.ndim == 2:
    return value.T
  if name == 'pe':
    return value.transpose(0, 2, 3, 4, 1)
  return value


def _torch_shape(name: str, shape) -> tuple:
  return _to_torch_layout(name, np.empty(shape, np.uint8)).shape


def _template(model_args: Mapping[str, Any]):
  """{torch key: (collection, path, our shape, dtype)} of the model that model_args describe."""
  out = {}
  for collection, tree in model_from_reference_args(model_args).variable_shapes().items():
    for path, leaf in flax.traverse_util.flatten_dict(tree).items():
      out['.'.join(path)] = (collection, path, leaf.shape, leaf.dtype)
  return out


def _as_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict:
  """Drops the `module.` prefix that DataParallel / DistributedDataParallel add to every key."""
  if state_dict and all(k.startswith('module.') for k in state_dict):
    return {k[len('module.'):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def variables_from_state_dict(state_dict: Mapping[str, Any], model_args: Mapping[str, Any]):
  """Flax variables {'params', 'batch_stats'[, 'buffers']} from a reference state dict.

  Values may be torch tensors or numpy arrays; floating dtypes are kept (float64 state dicts
  give float64 variables where jax_enable_x64 is on). A stored `pes.pe` is used as stored,
  as PyTorch's `load_state_dict` uses buffers; a missing one is recomputed, as is a missing
  `num_batches_tracked` (set to 0). Any missing, unexpected or mis-shaped key raises
  `CheckpointMismatchError` naming each key with the expected and the found shape.
  """
  state_dict = strip_module_prefix(state_dict)
  template = _template(model_args)
  problems, tree = [], {}
  for key in sorted(set(state_dict) - set(template)):
    problems.append(f'unexpected key {key!r} (shape {tuple(_as_numpy(state_dict[key]).shape)})')
  computed = None
  for key, (collection, path, shape, dtype) in template.items():
    name = path[-1]
    expected = _torch_shape(name, shape)
    if key not in state_dict:
      if key.endswith(OPTIONAL_SUFFIXES):
        if computed is None:
          computed = _initial_buffers(model_args)
        value = np.asarray(flax.traverse_util.flatten_dict(computed[collection])[path])
        tree.setdefault(collection, {})[path] = value
      else:
        problems.append(f'missing key {key!r} (expected shape {expected})')
      continue
    value = _as_numpy(state_dict[key])
    if key.endswith('num_batches_tracked'):
      value = value.reshape(()) if value.size == 1 else value
    if tuple(value.shape) != tuple(expected):
      problems.append(f'key {key!r}: expected shape {expected}, found {tuple(value.shape)}')
      continue
    if np.issubdtype(dtype, np.integer):
      value = value.astype(dtype)
    elif not np.issubdtype(value.dtype, np.floating):
      problems.append(f'key {key!r}: expected a floating-point tensor, found {value.dtype}')
      continue
    tree.setdefault(collection, {})[path] = _from_torch_layout(name, value)
  if problems:
    hint = _config_hint(problems)
    listed = '\n  '.join(problems[:_MAX_LISTED])
    more = f'\n  ... and {len(problems) - _MAX_LISTED} more' if len(problems) > _MAX_LISTED else ''
    raise CheckpointMismatchError(
        f'state dict does not fit the model described by model_args ({len(problems)} '
        f'problem(s)){hint}:\n  {listed}{more}')
  return {c: jax.tree_util.tree_map(jnp.asarray, flax.traverse_util.unflatten_dict(t))
          for c, t in tree.items()}


def _config_hint(problems) -> str:
  if len(problems) > 2 or any('found (' in p for p in problems):
    return ' - is it a checkpoint of another config (blocks, heads, window, classes)?'
  return ''


def _initial_buffers(model_args):
  """The variables other than `params` (BatchNorm statistics and counters, the positional
  tables) as the model initialises them: no random draw among them, so XLA drops the
  parameters' (jitted: 18.5 s eagerly for NTU on the CPU)."""
  model = model_from_reference_args(model_args)
  x = jnp.zeros(model.input_shape())
  return jax.jit(lambda key: {c: v for c, v in model.init(key, x, train=False).items()
                              if c != 'params'})(jax.random.key(0))


def state_dict_from_variables(variables: Mapping[str, Any],
                              model_args: Mapping[str, Any]) -> 'collections.OrderedDict[str, np.ndarray]':
  """The reference state dict (numpy values, reference order) of `variables`.

  The inverse of `variables_from_state_dict`. Collections that are absent are left out, so
  `{'params': grads}` gives the gradients under the reference's parameter keys.
  """
  template = _template(model_args)
  flat = {}
  for collection, tree in variables.items():
    for path, value in flax.traverse_util.flatten_dict(dict(tree)).items():
      key = '.'.join(path)
      if key not in template or template[key][0] != collection:
        raise CheckpointMismatchError(f'variable {collection}/{"/".join(path)} is not part of the '
                                      f'model described by model_args')
      flat[key] = value
  out = collections.OrderedDict()
  for key in reference_keys(model_args):
    if key in flat:
      value = np.asarray(flat[key])
      if key.endswith('num_batches_tracked'):
        value = value.astype(np.int64)
      # np.array, not ascontiguousarray, which turns 0-d counters into shape (1,).
      out[key] = np.array(_to_torch_layout(key.rsplit('.', 1)[-1], value), order='C')
  return out


def load_pt(path: str | os.PathLike) -> 'collections.OrderedDict[str, np.ndarray]':
  """A reference `.pt` checkpoint as an ordered dict of numpy arrays.

  Accepts a bare state dict (what the reference saves) or one wrapped under `state_dict`,
  `model_state_dict`, `model` or `net`.
  """
  import torch  # optional dependency: pip install istanet-jax[torch]

  path = os.fspath(path)
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: no such checkpoint file') from None
  except Exception as e:  # torch raises many types for a damaged or foreign file
    raise ValueError(f'{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})') from e
  if isinstance(obj, Mapping):
    for wrapper in ('state_dict', 'model_state_dict', 'model', 'net'):
      if isinstance(obj.get(wrapper), Mapping):
        obj = obj[wrapper]
        break
  if not isinstance(obj, Mapping) or not all(hasattr(v, 'shape') for v in obj.values()):
    raise ValueError(f'{path}: expected a state dict of tensors, found {type(obj).__name__}')
  return collections.OrderedDict((k, _as_numpy(v)) for k, v in obj.items())


def save_pt(state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes a state dict as the reference saves it (`torch.save` of an ordered dict of tensors).

  Atomic: written to a temporary file beside `path`, then renamed.
  """
  import torch

  path = os.fspath(path)
  tensors = collections.OrderedDict(
      (k, torch.from_numpy(np.array(_as_numpy(v), order='C'))) for k, v in state_dict.items())
  with files.atomic_path(path, '.pt') as tmp:
    torch.save(tensors, tmp)


def load_reference_checkpoint(path: str | os.PathLike, model_args: Mapping[str, Any],
                              dtype: Optional[Any] = None):
  """(model, variables) from a reference `.pt` file and its config's model_args."""
  try:
    variables = variables_from_state_dict(load_pt(path), model_args)
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f'{os.fspath(path)}: {e}') from None
  return model_from_reference_args(model_args, dtype=dtype), variables
