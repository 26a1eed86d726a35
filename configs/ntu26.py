r"""ISTA-Net on NTU Mutual 26 (the 26 two-person classes of NTU RGB+D 120), joint stream.

The reference's config/ntu/ntu26_{xsub,xset}_joint.yaml, value for value. Prepare the data
once (`python -m data_pipelines.prepare --dataset ntu_mutual26/xsub --manual_dir RAW
--data_dir DATA`), then:

  python -m istanet_jax.train --config configs/ntu26.py:xsub --workdir /tmp/ntu26_xsub \
      --config.data_dir=DATA

Expected: top-1 90.6 (x-sub) / 91.7 (x-set) after 110 epochs, as in the paper.
`:xsub,runlocal` is a tiny variant for tests and smoke runs. `:xsub,stream=bone` (also
`joint_motion`, `bone_motion`) trains another input stream (the reference NTU feeder's `bone` /
`vel` options) for score fusion (`python -m istanet_jax.protocols fuse`).
"""

import ml_collections

from configs import common


def get_config(arg: str = 'xsub'):
  args = common.parse_arg(arg, benchmark='xsub', stream='joint', runlocal=False)
  if args.benchmark not in ('xsub', 'xset'):
    raise ValueError(f'ntu26 benchmark must be xsub or xset, got {args.benchmark!r}')
  config = common.base_config()
  config.dataset = f'ntu_mutual26/{args.benchmark}'
  config.train_split, config.eval_split = 'train', 'test'
  config.max_frames = 300  # NTU sequences are at most 300 frames (Kinect v2, 30 fps, <10 s).
  config.seed = 1
  config.model = ml_collections.ConfigDict(dict(
      window_size=(20, 1, 2), num_frames=120, num_joints=25, num_persons=2, num_channels=3,
      num_classes=26, num_heads=3, kernel_size=(3, 5), use_pes=True,
      config=((64, 64, 16), (64, 64, 16), (64, 128, 32), (128, 128, 32),
              (128, 256, 64), (256, 256, 64), (256, 256, 64), (256, 256, 64)),
      att_drop=0.0, dropout=0.0))
  config.train_feeder = ml_collections.ConfigDict(dict(
      window_size=120, p_interval=(0.5, 1.0), random_rot=True, entity_rearrangement=True,
      vel=False, bone=False))
  config.test_feeder = ml_collections.ConfigDict(dict(
      window_size=120, p_interval=(0.95,), vel=False, bone=False))
  config.optimizer = 'SGD'
  config.weight_decay = 4e-4
  config.base_lr = 0.1
  config.lr_decay_rate = 0.1
  config.step = (35, 60, 80, 95)
  config.warm_up_epoch = 5
  config.nesterov = True
  config.loss = 'LabelSmoothingCrossEntropy'
  config.loss_args = ml_collections.ConfigDict(dict(smoothing=0.1, temperature=1.0))
  config.batch_size = 32
  config.test_batch_size = 32
  config.num_epoch = 110
  # The reference trains on 4 GPUs with DataParallel: BatchNorm sees sub-batches of
  # batch_size / 4 (8), also when batch_size is overridden.
  config.bn_group_size = config.get_ref('batch_size') // 4
  config.interchangeable_entities = (0, 1)  # the two persons
  common.set_stream(config, args.stream)
  if args.runlocal:
    common.make_runlocal(config)
  return common.lock(config)
