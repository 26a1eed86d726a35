"""Reference checkpoints: key mapping, round trips, and clear errors for malformed ones."""

import jax
import numpy as np
import pytest

from istanet_jax import torch_compat
from parity_cases import Case

SMALL = Case('pad_odd')


@pytest.fixture(scope='module')
def state_dict():
  return {k: v.astype(np.float32) if v.dtype == np.float64 else v
          for k, v in SMALL.state_dict().items()}


def test_round_trip_is_exact_and_in_reference_order(state_dict):
  variables = torch_compat.variables_from_state_dict(state_dict, SMALL.model_args)
  assert set(variables) == {'params', 'batch_stats', 'buffers'}
  back = torch_compat.state_dict_from_variables(variables, SMALL.model_args)
  assert list(back) == list(torch_compat.reference_keys(SMALL.model_args))
  assert list(back) == list(state_dict)  # the order PyTorch's state_dict() gives
  for key, value in state_dict.items():
    assert back[key].shape == value.shape, key
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_stored_positional_encoding_is_used_as_stored(state_dict):
  state = dict(state_dict)
  state['blocks.1.pes.pe'] = state['blocks.1.pes.pe'] + 0.5
  variables = torch_compat.variables_from_state_dict(state, SMALL.model_args)
  pe = np.asarray(variables['buffers']['blocks.1']['pes']['pe'])
  np.testing.assert_array_equal(pe.transpose(0, 4, 1, 2, 3), state['blocks.1.pes.pe'])


def test_missing_optional_keys_are_recomputed(state_dict):
  state = {k: v for k, v in state_dict.items()
           if not k.endswith(('pes.pe', 'num_batches_tracked'))}
  variables = torch_compat.variables_from_state_dict(state, SMALL.model_args)
  pe = np.asarray(variables['buffers']['blocks.0']['pes']['pe']).transpose(0, 4, 1, 2, 3)
  # The reference's float32 table, recomputed with numpy's sin/cos: equal to an ulp.
  np.testing.assert_allclose(pe, state_dict['blocks.0.pes.pe'], rtol=0, atol=1e-6)
  assert int(variables['batch_stats']['embed']['1']['num_batches_tracked']) == 0


def test_data_parallel_prefix_accepted(state_dict):
  prefixed = {'module.' + k: v for k, v in state_dict.items()}
  a = torch_compat.variables_from_state_dict(prefixed, SMALL.model_args)
  b = torch_compat.variables_from_state_dict(state_dict, SMALL.model_args)
  np.testing.assert_array_equal(a['params']['fc']['weight'], b['params']['fc']['weight'])


def test_missing_key_is_named(state_dict):
  state = dict(state_dict)
  del state['blocks.1.proj.0.weight']
  with pytest.raises(torch_compat.CheckpointMismatchError,
                     match=r"missing key 'blocks.1.proj.0.weight' \(expected shape \(48, 64, 1, 1, 3\)\)"):
    torch_compat.variables_from_state_dict(state, SMALL.model_args)


def test_wrong_shape_is_named_with_both_shapes(state_dict):
  state = dict(state_dict)
  state['fc.weight'] = np.zeros((7, 48), np.float32)
  with pytest.raises(torch_compat.CheckpointMismatchError,
                     match=r"key 'fc.weight': expected shape \(5, 48\), found \(7, 48\)"):
    torch_compat.variables_from_state_dict(state, SMALL.model_args)


def test_unexpected_key_is_named(state_dict):
  state = dict(state_dict, **{'blocks.2.alpha': np.ones((1, 2, 1, 1), np.float32)})
  with pytest.raises(torch_compat.CheckpointMismatchError, match=r"unexpected key 'blocks.2.alpha'"):
    torch_compat.variables_from_state_dict(state, SMALL.model_args)


def test_checkpoint_of_another_config_is_refused(state_dict):
  other = dict(SMALL.model_args, num_heads=3, num_classes=9)
  with pytest.raises(torch_compat.CheckpointMismatchError) as err:
    torch_compat.variables_from_state_dict(state_dict, other)
  message = str(err.value)
  assert 'another config' in message
  assert "key 'blocks.0.alpha': expected shape (1, 3, 1, 1), found (1, 2, 1, 1)" in message
  assert "key 'fc.weight': expected shape (9, 48), found (5, 48)" in message


def test_non_float_tensor_refused(state_dict):
  state = dict(state_dict, **{'fc.bias': np.zeros(5, np.int64)})
  with pytest.raises(torch_compat.CheckpointMismatchError, match="'fc.bias': expected a floating"):
    torch_compat.variables_from_state_dict(state, SMALL.model_args)


def test_unknown_model_arg_refused():
  with pytest.raises(ValueError, match=r"unknown model_args \['num_layers'\]"):
    torch_compat.model_from_reference_args(dict(SMALL.model_args, num_layers=3))


def test_pt_round_trip_and_damaged_file(state_dict, tmp_path):
  path = tmp_path / 'model.pt'
  torch_compat.save_pt(state_dict, path)
  loaded = torch_compat.load_pt(path)
  assert list(loaded) == list(state_dict)
  for key in state_dict:
    np.testing.assert_array_equal(loaded[key], state_dict[key])
  model, variables = torch_compat.load_reference_checkpoint(path, SMALL.model_args)
  assert model.num_classes == 5 and 'params' in variables
  damaged = tmp_path / 'damaged.pt'
  damaged.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(ValueError, match=r'damaged.pt: not a readable PyTorch checkpoint'):
    torch_compat.load_pt(damaged)
  with pytest.raises(FileNotFoundError, match='nothing.pt: no such checkpoint file'):
    torch_compat.load_pt(tmp_path / 'nothing.pt')
  other = tmp_path / 'other.pt'
  torch_compat.save_pt({k: v for k, v in state_dict.items() if k != 'fc.bias'}, other)
  with pytest.raises(torch_compat.CheckpointMismatchError, match=r"(?s)other.pt: .*missing key 'fc.bias'"):
    torch_compat.load_reference_checkpoint(other, SMALL.model_args)


def test_parameter_count_equals_the_reference():
  """The reference's `# Parameters` (p.numel() over model.parameters()) from its own checkpoints."""
  for name in ('pad_odd', 'ntu26'):
    case = Case(name)
    buffers = ('running_mean', 'running_var', 'num_batches_tracked', 'pes.pe')
    reference = sum(v.size for k, v in case.state_dict().items() if not k.endswith(buffers))
    model = torch_compat.model_from_reference_args(case.model_args)
    variables = model.variable_shapes()
    ours = sum(p.size for p in jax.tree_util.tree_leaves(variables['params']))
    assert ours == reference, name
    assert model.num_tokens == variables['params']['blocks.0']['M'].shape[-1]
