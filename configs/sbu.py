r"""ISTA-Net on SBU-Kinect-Interaction 2.0 (Clean or Noisy), joint stream, one of five folds.

The reference's config/sbu/sbu_{clean,noisy}_joint.yaml, value for value; `fold=k` is the
YAML's `fold` (test on fold k, train on the other four). Prepare the data once
(`python -m data_pipelines.prepare --dataset sbu_kinect_interaction/clean --manual_dir RAW
--data_dir DATA`), then, for each k in 0..4:

  python -m istanet_jax.train --config configs/sbu.py:clean,fold=k \
      --workdir /tmp/sbu_clean_fold$k --config.data_dir=DATA

Expected: top-1 98.5 after 150 epochs, the mean of the five folds' accuracies, as in the
paper. `:clean,runlocal` is a tiny variant for tests and smoke runs.
"""

import ml_collections

from configs import common

NUM_FOLDS = 5


def get_config(arg: str = 'clean'):
  args = common.parse_arg(arg, version='clean', fold=0, runlocal=False)
  if args.version not in ('clean', 'noisy'):
    raise ValueError(f'sbu version must be clean or noisy, got {args.version!r}')
  if not 0 <= args.fold < NUM_FOLDS:
    raise ValueError(f'sbu fold must be in 0..{NUM_FOLDS - 1}, got {args.fold}')
  clean = args.version == 'clean'
  config = common.base_config()
  config.dataset = f'sbu_kinect_interaction/{args.version}'
  config.train_split = '+'.join(f'fold{k}' for k in range(NUM_FOLDS) if k != args.fold)
  config.eval_split = f'fold{args.fold}'
  # The reference pads or cuts every sequence to 46 frames, so the reader always yields 46.
  config.max_frames = 46
  config.seed = 1
  window = 40 if clean else 60
  config.model = ml_collections.ConfigDict(dict(
      window_size=(20, 5, 2) if clean else (15, 15, 1), num_frames=window, num_joints=15,
      num_persons=2, num_channels=3, num_classes=8, num_heads=3, kernel_size=(5, 5),
      use_pes=True,
      config=((64, 64, 16), (64, 64, 16), (64, 128, 32), (128, 128, 32),
              (128, 256, 64), (256, 256, 64)),
      att_drop=0.1, dropout=0.1))
  config.train_feeder = ml_collections.ConfigDict(dict(
      window_size=window, p_interval=(0.5, 1.0), random_rot=True, entity_rearrangement=True,
      vel=False, bone=False))
  config.test_feeder = ml_collections.ConfigDict(dict(
      window_size=window, p_interval=(0.95,), vel=False, bone=False))
  config.optimizer = 'AdamW'
  config.optimizer_betas = (0.9, 0.999)
  config.weight_decay = 4e-4
  config.base_lr = 5e-4
  config.lr_decay_rate = 0.25
  config.step = (35, 60, 90, 120)
  config.warm_up_epoch = 5
  config.nesterov = False  # main.py's default; unused by AdamW
  config.loss = 'LabelSmoothingCrossEntropy'
  config.loss_args = ml_collections.ConfigDict(dict(
      smoothing=0.12 if clean else 0.15, temperature=1.0))
  config.batch_size = 32
  config.test_batch_size = 32
  config.num_epoch = 150
  # The reference trains on one GPU: BatchNorm sees the whole batch.
  config.bn_group_size = None
  config.interchangeable_entities = (0, 1)  # the two persons
  if args.runlocal:
    common.make_runlocal(config)
  return common.lock(config)
