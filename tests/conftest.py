import os
import sys

# Tests see several fake CPU devices, so sharding code runs as on a multi-device host.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
sys.path.insert(0, os.path.dirname(__file__))

# As the entry points do (before any JAX backend starts): the allocator and matmul settings
# of istanet_jax.host, so tests run the code as users run it.
from istanet_jax import host  # pylint: disable=g-import-not-at-top,wrong-import-position

host.configure()


def prepared_sbu(root, num_per_class: int) -> str:
  """A synthetic SBU Clean raw tree under root/raw, prepared (ArrayRecord) into root/data."""
  from data_pipelines import prepare  # pylint: disable=g-import-not-at-top
  from data_pipelines.synthetic_sbu_h2o import write_sbu_tree  # pylint: disable=g-import-not-at-top
  write_sbu_tree(root / 'raw', num_per_class=num_per_class, seed=0, versions=('Clean',))
  prepare.prepare('sbu_kinect_interaction/clean', root / 'raw', root / 'data')
  return str(root / 'data')
