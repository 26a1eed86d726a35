"""What every experiment config shares: the schema with its defaults, argument parsing, the
tiny `runlocal` variant.

A config is the reference YAML of the same experiment, key for key where the reference has the
key (model_args -> `model`, train/test feeder args -> `train_feeder` / `test_feeder`, optimiser,
LR rule, loss, batch sizes, epochs), plus our own keys for data, precision and bookkeeping.

Sequences are tuples where the YAML has lists: ml_collections' command-line flags can override
a tuple (`--config.step='(30, 50)'`) but not a list.
"""

import ml_collections


def parse_arg(arg: str, **defaults):
  """'xsub,runlocal,fold=2' -> ConfigDict(benchmark='xsub', runlocal=True, fold=2).

  The first bare word fills the first default's key unless that key is a boolean (a config
  without a variant takes no bare words but its switches); `key=value` sets that key (ints,
  floats and booleans parsed); a bare word equal to a boolean key switches it on.
  """
  values = dict(defaults)
  first = next(iter(defaults)) if defaults else None
  if first is not None and isinstance(defaults[first], bool):
    first = None
  for i, token in enumerate(t.strip() for t in (arg or '').split(',')):
    if not token:
      continue
    if '=' in token:
      key, value = token.split('=', 1)
      if key not in defaults:
        raise ValueError(f'unknown config argument {key!r}; known: {sorted(defaults)}')
      values[key] = _parse_value(key, value, defaults[key])
    elif isinstance(defaults.get(token), bool):
      values[token] = True
    elif i == 0 and first is not None:
      values[first] = token
    else:
      raise ValueError(f'unknown config argument {token!r}; known: {sorted(defaults)}')
  return ml_collections.ConfigDict(values)


_BOOLS = {'1': True, 'true': True, 'yes': True, '0': False, 'false': False, 'no': False}


def _parse_value(key: str, value: str, default):
  try:
    if isinstance(default, bool):
      return _BOOLS[value.lower()]
    if isinstance(default, int):
      return int(value)
    if isinstance(default, float):
      return float(value)
  except (KeyError, ValueError):
    raise ValueError(f'config argument {key}={value!r} is not a {type(default).__name__}') from None
  return value


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Data: a TFDS dataset prepared by `python -m data_pipelines.prepare`.
  config.dataset = ''
  # The sample feature the model learns to predict ('label'; Assembly101 also has 'verb' and
  # 'noun', its 'label' being the action).
  config.label_key = 'label'
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.manual_dir = ml_collections.FieldReference(None, field_type=str)  # raw tree: prepare if needed
  config.synthetic_raw = ''  # demo: write a synthetic raw tree of this kind into manual_dir
  config.synthetic_options = ml_collections.ConfigDict()  # keyword arguments of its writer
  config.prepare_file_format = 'array_record'
  config.data_backend = 'auto'  # 'tf' (TFRecord via tf.data), 'grain' (ArrayRecord), or 'auto'
  config.train_split = 'train'
  config.eval_split = 'test'
  config.max_frames = 300  # length bound of the zero-padded raw sequences in a batch
  config.seed = 1
  # The reference's model_args and feeder args.
  config.model = ml_collections.ConfigDict()
  config.train_feeder = ml_collections.ConfigDict()
  config.test_feeder = ml_collections.ConfigDict()
  # Optimiser, LR rule and loss (reference keys).
  config.optimizer = 'SGD'
  config.optimizer_betas = (0.9, 0.999)
  config.weight_decay = 5e-4
  config.base_lr = 0.1
  config.lr_decay_rate = 0.1
  config.step = (60, 80)
  config.warm_up_epoch = 5
  config.nesterov = False
  config.loss = 'LabelSmoothingCrossEntropy'
  config.loss_args = ml_collections.ConfigDict(dict(smoothing=0.1, temperature=1.0))
  config.batch_size = 32
  config.test_batch_size = 32
  config.num_epoch = 80
  config.eval_interval = 2  # main.py's default; no reference YAML sets it
  # Ours.
  config.bn_group_size = ml_collections.FieldReference(None, field_type=int)
  config.dtype = 'float32'  # 'bfloat16': bf16 compute, float32 parameters and optimiser
  # How the 1-D convolutions (proj, TA) run: 'winograd' (F(4,5), F(4,3): about half the
  # matmul work, float32 rounding-level differences; bf16 compute takes 'matmul'), 'matmul'
  # (direct, the reference's arithmetic; shifted-copy gradients made for XLA:CPU) or 'xla'
  # (direct, autodiff of the convolution: cuDNN on a GPU).
  config.conv_algorithm = 'winograd'
  # bf16 compute: matmul and convolution results in 'float32' (XLA:CPU's matrix units need it)
  # or 'compute' (bf16, as torch.autocast; half the output traffic on a GPU); 'auto': float32
  # on the CPU, compute elsewhere.
  config.matmul_outputs = 'auto'
  config.grad_clip_norm = 0.0  # 0: off (the reference does not clip)
  # Gradient accumulation: each step runs its batch as this many microbatches one after another
  # (the same sums; activation memory / microbatches). Needs bn_group_size dividing a
  # microbatch's rows per device, so BatchNorm sees the same groups (istanet_jax/steps.py).
  config.microbatches = 1
  config.checkpoint_every_epochs = 1
  config.keep_checkpoints = 2
  config.log_every_steps = 50
  config.save_score = True
  # Evaluation protocols (istanet_jax.steps.make_eval_step). Entity slots whose order carries
  # no meaning (two persons, two hands; never an object slot): set per dataset.
  config.interchangeable_entities = ()
  config.eval_entity_permutation = False  # average the logits over their orders
  config.eval_swap_consistency = True  # eval/swap_consistency: one more forward per eval batch
  config.eval_num_clips = 1  # multi-clip testing: uniformly placed test crops, logits averaged
  return config


# The reference's input streams (its NTU feeder's `bone` / `vel` options): stream -> (bone, vel).
STREAMS = {'joint': (False, False), 'bone': (True, False), 'joint_motion': (False, True),
           'bone_motion': (True, True)}


def set_stream(config: ml_collections.ConfigDict, stream: str) -> None:
  """Sets both feeders' `bone` / `vel` for `stream` (one of STREAMS)."""
  if stream not in STREAMS:
    raise ValueError(f'stream must be one of {sorted(STREAMS)}, got {stream!r}')
  bone, vel = STREAMS[stream]
  for feeder in (config.train_feeder, config.test_feeder):
    feeder.bone, feeder.vel = bone, vel


def make_runlocal(config: ml_collections.ConfigDict) -> None:
  """Shrinks a config for tests and CPU smoke runs: 2 small blocks, few epochs, small batches."""
  model = config.model
  model.config = ((16, 16, 8), (16, 32, 8))
  model.num_heads = 2
  config.batch_size = 8
  config.test_batch_size = 8
  config.num_epoch = 2
  config.warm_up_epoch = 1
  config.step = (1,)
  config.bn_group_size = None
  config.log_every_steps = 1


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.lock()
  return config
