"""Raw readers, synthetic raw trees and TFDS builders for NTU, SBU, H2O and Assembly101.

Importing this package is cheap and imports neither TensorFlow nor TFDS, so the readers run
where neither is installed. The TFDS builders live in `data_pipelines.builders`; importing
that module registers them (`ntu_mutual26`, `ntu120`, `ntu_mutual11`,
`sbu_kinect_interaction`, `h2o`, `assembly101`). When TFDS is already imported, importing
this package registers them too, so the usual order works:

  import tensorflow_datasets as tfds
  import data_pipelines
  tfds.builder('ntu_mutual26/xsub', data_dir=...)

Reading a prepared dataset needs no registration: `tfds.builder(name, data_dir=...)` rebuilds
it from the files written by `python -m data_pipelines.prepare`.
"""

import sys as _sys

if 'tensorflow_datasets' in _sys.modules:
  # Costs nothing extra then: TFDS is loaded, and builders.py adds only the numpy readers.
  from data_pipelines import builders as _builders  # noqa: F401  (registers on import)
