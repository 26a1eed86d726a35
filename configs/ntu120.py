r"""ISTA-Net on all 120 classes of NTU RGB+D 120, joint stream.

The reference has no config for it: these are configs/ntu26.py's hyper-parameters (its
config/ntu/ntu26_{xsub,xset}_joint.yaml) with 120 classes. Prepare the data once
(`python -m data_pipelines.prepare --dataset ntu120/xsub --manual_dir RAW --data_dir DATA`),
then:

  python -m istanet_jax.train --config configs/ntu120.py:xsub --workdir /tmp/ntu120_xsub \
      --config.data_dir=DATA

Expected: none published; the ISTA-Net paper reports no full NTU RGB+D 120 result.
`:xsub,runlocal` is a tiny variant for tests and smoke runs.
"""

from configs import common
from configs import ntu26


def get_config(arg: str = 'xsub'):
  args = common.parse_arg(arg, benchmark='xsub', stream='joint', runlocal=False)
  if args.benchmark not in ('xsub', 'xset'):
    raise ValueError(f'ntu120 benchmark must be xsub or xset, got {args.benchmark!r}')
  config = ntu26.get_config(arg)
  config.dataset = f'ntu120/{args.benchmark}'
  config.model.num_classes = 120
  return common.lock(config)
