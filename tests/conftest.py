import os
import sys

# Tests see several fake CPU devices, so sharding code runs as on a multi-device host.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
sys.path.insert(0, os.path.dirname(__file__))
