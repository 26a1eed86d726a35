import os
import sys

# Tests see several fake CPU devices, so sharding code runs as on a multi-device host.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
sys.path.insert(0, os.path.dirname(__file__))

# As the entry points do (before any JAX backend starts): the allocator and matmul settings
# of istanet_jax.host, so tests run the code as users run it.
from istanet_jax import host  # pylint: disable=g-import-not-at-top,wrong-import-position

host.configure()
