"""TFDS dataset builders for NTU RGB+D (Mutual 26, 120, Mutual 11), SBU, H2O and Assembly101.

This file owns how the raw readers' `Sample`s become TFDS examples: the builder names, configs,
splits, features and the checks on the manual directory. Importing it registers the builders
with TFDS (it imports `tensorflow_datasets`, which does not import TensorFlow by itself).
Parsing stays in the readers (`ntu.py`, `sbu.py`, `h2o.py`, `assembly101.py`); every example is
one reader sample, stored exactly as the reader yields it with its default arguments, so what
`as_data_source()` / `as_dataset()` returns equals the reader's arrays bit for bit.

Builders (name/config -> splits):
  ntu_mutual26/{xsub,xset}  -> train, test  (NTU120 files, the 26 mutual classes, labels 0..25)
  ntu120/{xsub,xset}        -> train, test  (all 120 classes)
  ntu_mutual11/{xsub,xview} -> train, test  (NTU60 setups 1-17, the 11 mutual classes)
  sbu_kinect_interaction/{clean,noisy} -> fold0 .. fold4; the reference's training set of fold
      k is the other four, e.g. `sbu_train_split(1)` == 'fold0+fold2+fold3+fold4'
  h2o                       -> train, validation, test (test labels -1)
  assembly101               -> train, validation, test (label = action; verb and noun are
      features; test labels -1 and `pose_missing` marks the reference's stand-in sequences)

Features, all builders: `skeleton` float32 (T, V, M, 3) stored as raw bytes (T varies for NTU;
the others are padded/cropped by their readers as the reference does), `label` int64,
`sample_name` text (also the example key, unique per split), `length` int64 (the frames that
count, as the reader reports it); `id` where the dataset has one (H2O, Assembly101), `verb` and
`noun` (Assembly101, -1 for test).

Examples are generated one sample at a time (NTU files are parsed in `num_workers` processes,
default: the cores this process may use); TFDS shuffles them on disk by hashing the key, so
on-disk order is deterministic but is not the reader's order.
"""

from __future__ import annotations

import glob
import os
import warnings
from typing import Optional

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import assembly101, h2o, ntu, sbu
from data_pipelines.common import DataError, Sample

VERSION = tfds.core.Version('1.0.0')
RELEASE_NOTES = {'1.0.0': 'Initial release: the reference (ISTA-Net) preprocessing, unpadded '
                          'NTU sequences.'}


def _skeleton(num_joints: int, num_entities: int) -> tfds.features.Tensor:
  # BYTES keeps float32 as raw bytes (NONE would store a float list, larger and slower to parse)
  # and allows the one unknown (time) dimension.
  return tfds.features.Tensor(shape=(None, num_joints, num_entities, 3), dtype=np.float32,
                              encoding=tfds.features.Encoding.BYTES,
                              doc='float32 (frames, joints, entities, xyz)')


def _features(num_joints: int, num_entities: int, num_classes: int, **extra):
  return tfds.features.FeaturesDict({
      'skeleton': _skeleton(num_joints, num_entities),
      'label': tfds.features.Scalar(np.int64, doc=f'0-based class in [0, {num_classes}); -1 '
                                                  'where the split has no labels'),
      'sample_name': tfds.features.Text(doc='unique within a split; the example key'),
      'length': tfds.features.Scalar(np.int64, doc='frames that count, as the reader reports'),
      **extra,
  })


def _example(sample: Sample, **extra) -> tuple[str, dict]:
  return sample.sample_name, {
      'skeleton': sample.skeleton, 'label': sample.label, 'sample_name': sample.sample_name,
      'length': sample.length, **extra}


def _require_dirs(manual_dir, names, *, instructions: str = '') -> None:
  """Raises DataError naming manual_dir and the sub-folders it lacks."""
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise DataError(manual_dir, 'manual_dir does not exist or is not a directory')
  base = glob.escape(manual_dir)
  missing = [n for n in names
             if not any(os.path.isdir(p) for p in glob.glob(os.path.join(base, n)))]
  if missing:
    need = ', '.join(f'{n}/' for n in missing)
    raise DataError(manual_dir, f'manual_dir lacks {need}; the builder expects:\n'
                    f'{instructions.strip()}')


def default_num_workers() -> int:
  """Processes for NTU parsing: the cores this process may run on (0, i.e. inline, if one)."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cores = os.cpu_count() or 1
  return cores if cores > 1 else 0


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What all six builders share."""

  VERSION = VERSION
  RELEASE_NOTES = RELEASE_NOTES

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 finds this file through `importlib_resources`, which it only requires on
    # Python < 3.9, so building from a package fails without it (tensorflow/datasets#11212).
    return epath.Path(__file__)


# ----------------------------------------------------------------------------- NTU

_NTU_INSTRUCTIONS = """\
Request and download the skeleton archives from https://rose1.ntu.edu.sg/dataset/actionRecognition/
(`nturgbd_skeletons_s001_to_s017.zip`, and for NTU RGB+D 120 also
`nturgbd_skeletons_s018_to_s032.zip`) and extract them into manual_dir so that it holds
  nturgb+d_skeletons/S001C001P001R001A001.skeleton ...      (setups 1-17)
  nturgb+d_skeletons120/S018C001P008R001A061.skeleton ...   (setups 18-32; NTU120 only)
as the reference reads them (if the second archive unpacks to a folder named
nturgb+d_skeletons/ too, rename it; files in the wrong folder are ignored with a warning).
No statistics files are needed: NTU's 535 samples with missing skeletons are left out unread,
as the reference leaves them out; other files whose every frame is empty are skipped with a
warning.
"""

_NTU_CITATION = """\
@article{liu2019ntu,
  title={NTU RGB+D 120: A Large-Scale Benchmark for 3D Human Activity Understanding},
  author={Liu, Jun and Shahroudy, Amir and Perez, Mauricio and Wang, Gang and Duan, Ling-Yu and
          Kot, Alex C.},
  journal={IEEE Transactions on Pattern Analysis and Machine Intelligence},
  year={2020}
}
@inproceedings{shahroudy2016ntu,
  title={NTU RGB+D: A Large Scale Dataset for 3D Human Activity Analysis},
  author={Shahroudy, Amir and Liu, Jun and Ng, Tian-Tsong and Wang, Gang},
  booktitle={CVPR},
  year={2016}
}"""


# Builder name -> (class subset as `data_pipelines.ntu` names it, number of classes, NTU release
# as it names them, what the configs' descriptions call the dataset, the dataset's description).
_NTU_VARIANTS = {
    'ntu_mutual26': ('mutual26', 26, 'ntu120', 'NTU Mutual 26',
                     'NTU RGB+D 120 restricted to its 26 mutual actions (A050-A060 -> 0-10, '
                     'A106-A120 -> 11-25), preprocessed as ISTA-Net does (denoised, two actors, '
                     'origin at the first actor\'s spine mid). Sequences are not padded.'),
    'ntu120': ('all120', 120, 'ntu120', 'NTU RGB+D 120',
               'NTU RGB+D 120, all 120 actions (label = action - 1), preprocessed as ISTA-Net '
               'does. Sequences are not padded.'),
    'ntu_mutual11': ('mutual11', 11, 'ntu60', 'NTU Mutual 11',
                     'NTU RGB+D 60 (setups 1-17) restricted to its 11 mutual actions (A050-A060 '
                     '-> 0-10), preprocessed as ISTA-Net does. Sequences are not padded.'),
}
_BENCHMARK_NAMES = {'xsub': 'cross-subject', 'xset': 'cross-setup', 'xview': 'cross-view'}


class NtuBuilder(_Builder, skip_registration=True):
  """Shared by the three NTU builders; a subclass names its entry of `_NTU_VARIANTS`.

  `class X(NtuBuilder, builder_name=...)` sets the TFDS name, the class subset, the NTU release,
  its benchmarks as configs and the description. `num_workers` (a builder argument, not a
  config: it does not change the data) is the number of processes parsing `.skeleton` files;
  None uses every core this process may run on.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = _NTU_INSTRUCTIONS
  CLASSES: str
  NUM_CLASSES: int
  NTU_DATASET: str  # 'ntu120' or 'ntu60', as `data_pipelines.ntu` names them
  DESCRIPTION: str

  def __init_subclass__(cls, *, builder_name: str, **kwargs):
    cls.name = builder_name  # before TFDS registers the class under it
    cls.CLASSES, cls.NUM_CLASSES, cls.NTU_DATASET, title, cls.DESCRIPTION = (
        _NTU_VARIANTS[builder_name])
    cls.BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=b, description=f'{title}, {_BENCHMARK_NAMES[b]} benchmark')
        for b in ntu.BENCHMARKS[cls.NTU_DATASET]]
    super().__init_subclass__(**kwargs)

  def __init__(self, *, num_workers: Optional[int] = None, **kwargs):
    self._num_workers = default_num_workers() if num_workers is None else num_workers
    super().__init__(**kwargs)
    self._original_state['num_workers'] = num_workers  # pickled copies keep it

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION,
        features=_features(ntu.NUM_JOINTS, ntu.NUM_PERSONS, self.NUM_CLASSES),
        supervised_keys=('skeleton', 'label'),
        homepage='https://rose1.ntu.edu.sg/dataset/actionRecognition/', citation=_NTU_CITATION)

  @classmethod
  def check_manual_dir(cls, manual_dir) -> None:
    # NTU 120 needs both archives: classes A061-A120 exist only in setups 18-32, so a tree of
    # one would build without them, or without setups 1-17, and say nothing.
    dirs = ((ntu.SKELETON_DIR,) if cls.NTU_DATASET == 'ntu60'
            else (ntu.SKELETON_DIR, ntu.SKELETON_DIR_120))
    _require_dirs(manual_dir, dirs, instructions=cls.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _split_generators(self, dl_manager):
    self.check_manual_dir(dl_manager.manual_dir)
    return {split: self._generate_examples(dl_manager.manual_dir, split)
            for split in ('train', 'test')}

  def _generate_examples(self, manual_dir, split):
    for sample in ntu.iter_ntu_samples(
        os.fspath(manual_dir), benchmark=self.builder_config.name, split=split,
        classes=self.CLASSES, dataset=self.NTU_DATASET, num_workers=self._num_workers):
      yield _example(sample)


class NtuMutual26(NtuBuilder, builder_name='ntu_mutual26'):
  """NTU RGB+D 120 Mutual 26: the 26 two-person classes (A050-A060, A106-A120)."""


class Ntu120(NtuBuilder, builder_name='ntu120'):
  """NTU RGB+D 120, all 120 classes."""


class NtuMutual11(NtuBuilder, builder_name='ntu_mutual11'):
  """NTU RGB+D 60 Mutual 11: the 11 two-person classes (A050-A060) of setups 1-17."""


# ----------------------------------------------------------------------------- SBU

def sbu_fold_split(k: int) -> str:
  """The TFDS split holding the pairs of fold k (the reference's test set of fold k)."""
  sbu.fold_pairs(k)
  return f'fold{k}'


def sbu_train_split(k: int) -> str:
  """The reference's training set of fold k as TFDS split arithmetic: the other four folds."""
  return '+'.join(sbu_fold_split(i) for i in sbu.split_folds(k, 'train'))


class SbuKinectInteraction(_Builder):
  """SBU-Kinect-Interaction 2.0, five-fold cross-validation splits."""

  name = 'sbu_kinect_interaction'
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='clean', description='the Clean (segmented) version'),
      tfds.core.BuilderConfig(name='noisy', description='the Noisy (full-length) version'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download SBU-Kinect-Interaction 2.0 (https://www3.cs.stonybrook.edu/~kyun/research/kinect_interaction/)
and extract it into manual_dir so that it holds
  Clean/s01s02/01/001/skeleton_pos.txt ...   (for the `clean` config)
  Noisy/s01s02/01/001/skeleton_pos.txt ...   (for the `noisy` config)
A fold whose pairs are all absent is left out with a warning (TFDS refuses empty splits).
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('SBU-Kinect-Interaction 2.0 (8 two-person classes), de-normalised and '
                     'padded/cut to 46 frames as ISTA-Net does (padding before de-normalising, '
                     'so padded frames are (1280, 960, 0)). Split `foldK` holds the pairs of '
                     'fold K; train on the other four (`sbu_train_split(K)`).'),
        features=_features(sbu.NUM_JOINTS, sbu.NUM_PERSONS, sbu.NUM_CLASSES),
        supervised_keys=('skeleton', 'label'),
        homepage='https://www3.cs.stonybrook.edu/~kyun/research/kinect_interaction/',
        citation="""\
@inproceedings{yun2012two,
  title={Two-person Interaction Detection Using Body-Pose Features and Multiple Instance Learning},
  author={Yun, Kiwon and Honorio, Jean and Chattopadhyay, Debaleena and Berg, Tamara L. and
          Samaras, Dimitris},
  booktitle={CVPR Workshops},
  year={2012}
}""")

  @classmethod
  def check_manual_dir(cls, manual_dir, version: str) -> None:
    _require_dirs(manual_dir, (sbu.VERSIONS[version],),
                  instructions=cls.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _split_generators(self, dl_manager):
    version = self.builder_config.name
    root = os.fspath(dl_manager.manual_dir)
    self.check_manual_dir(root, version)
    missing = sbu.missing_pairs(root, version=version)
    splits = {}
    for k in range(sbu.NUM_FOLDS):
      if not _sbu_fold_has_data(root, version, k):
        warnings.warn(f'{sbu.version_dir(root, version)}: fold {k} left out, it has no '
                      f'sequences (missing pairs: {", ".join(missing.get(k, [])) or "none"})')
        continue
      if k in missing:
        warnings.warn(f'{sbu.version_dir(root, version)}: fold {k} lacks pairs '
                      f'{", ".join(missing[k])}')
      splits[sbu_fold_split(k)] = self._generate_examples(root, version, k)
    if not splits:
      raise DataError(sbu.version_dir(root, version), 'no fold has any sequence')
    return splits

  def _generate_examples(self, root, version, k):
    for sample in sbu.iter_sbu_samples(root, version=version, folds=[k]):
      yield _example(sample)


def _sbu_fold_has_data(root: str, version: str, k: int) -> bool:
  base = sbu.version_dir(root, version)
  for pair in sbu.fold_pairs(k):
    for label_dir in sbu.LABEL_DIRS:
      seq_root = os.path.join(base, pair, label_dir)
      if os.path.isdir(seq_root) and any(
          not s.startswith('.') and os.path.isdir(os.path.join(seq_root, s))
          for s in os.listdir(seq_root)):
        return True
  return False


# ----------------------------------------------------------------------------- H2O

class H2o(_Builder):
  """H2O (two hands and an object) action recognition poses."""

  name = 'h2o'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the H2O pose archives and the action label splits (https://taeinkwon.com/projects/h2o/)
and extract them into manual_dir so that it holds
  label_split/action_train.txt, action_val.txt, action_test.txt
  subject1/h1/0/cam4/hand_pose/000000.txt, .../obj_pose/..., .../action_label/... (all subjects)
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('H2O action clips: left hand, right hand and object (21 points each), '
                     'zero-padded or centre-cropped to 120 frames as ISTA-Net does. `id` is the '
                     'split file\'s id (the key of a challenge submission); test labels are -1.'),
        features=_features(h2o.NUM_JOINTS, h2o.NUM_ENTITIES, h2o.NUM_CLASSES,
                           id=tfds.features.Scalar(np.int64, doc='the split file\'s id')),
        supervised_keys=('skeleton', 'label'),
        homepage='https://taeinkwon.com/projects/h2o/',
        citation="""\
@inproceedings{kwon2021h2o,
  title={H2O: Two Hands Manipulating Objects for First Person Interaction Recognition},
  author={Kwon, Taein and Tekin, Bugra and St{\\"u}hmer, Jan and Bogo, Federica and
          Pollefeys, Marc},
  booktitle={ICCV},
  year={2021}
}""")

  @classmethod
  def check_manual_dir(cls, manual_dir) -> None:
    _require_dirs(manual_dir, ('label_split', 'subject*'),
                  instructions=cls.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _split_generators(self, dl_manager):
    self.check_manual_dir(dl_manager.manual_dir)
    return {split: self._generate_examples(dl_manager.manual_dir, split)
            for split in ('train', 'validation', 'test')}

  def _generate_examples(self, manual_dir, split):
    for sample in h2o.iter_h2o_samples(os.fspath(manual_dir), split):
      yield _example(sample, id=sample.id)


# ----------------------------------------------------------------------------- Assembly101

class Assembly101(_Builder):
  """Assembly101 fine-grained actions from 3D hand poses."""

  name = 'assembly101'
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the Assembly101 3D hand poses (poses_60fps) and the fine-grained csvs of the
assembly101-action-recognition repository (60 fps train/validation csvs with 13 columns, and
test_challenge.csv); see https://assembly-101.github.io/. manual_dir must hold
  {assembly101.ANNOTATION_DIR}/train.csv, validation.csv, test_challenge.csv
  {assembly101.POSE_DIR}/<video>.json
Train/validation segments without poses are skipped with a warning, as in the reference.
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=('Assembly101 fine-grained segments as ISTA-Net prepares them: both hands\' '
                     '21 landmarks over the segment plus 25 frames of context each side, cut or '
                     'zero-padded to 200 frames. `label` is the action (1380 classes); `verb` '
                     '(24) and `noun` (90) are features; test labels are -1 and `pose_missing` '
                     'marks test segments the reference replaced by 10 frames of ones.'),
        features=_features(
            assembly101.NUM_JOINTS, assembly101.NUM_HANDS, assembly101.NUM_CLASSES['action'],
            id=tfds.features.Scalar(np.int64, doc='the csv id'),
            verb=tfds.features.Scalar(np.int64, doc='verb class in [0, 24); -1 for test'),
            noun=tfds.features.Scalar(np.int64, doc='noun class in [0, 90); -1 for test'),
            pose_missing=tfds.features.Scalar(
                np.bool_, doc='test only: no poses, the sequence is the reference stand-in')),
        supervised_keys=('skeleton', 'label'),
        homepage='https://assembly-101.github.io/',
        citation="""\
@inproceedings{sener2022assembly101,
  title={Assembly101: A Large-Scale Multi-View Video Dataset for Understanding Procedural
         Activities},
  author={Sener, Fadime and Chatterjee, Dibyadip and Shelepov, Daniel and He, Kun and
          Singhania, Dipika and Wang, Robert and Yao, Angela},
  booktitle={CVPR},
  year={2022}
}""")

  @classmethod
  def check_manual_dir(cls, manual_dir) -> None:
    _require_dirs(manual_dir, (assembly101.ANNOTATION_DIR, assembly101.POSE_DIR),
                  instructions=cls.MANUAL_DOWNLOAD_INSTRUCTIONS)

  def _split_generators(self, dl_manager):
    self.check_manual_dir(dl_manager.manual_dir)
    return {split: self._generate_examples(dl_manager.manual_dir, split)
            for split in assembly101.SPLITS}

  def _generate_examples(self, manual_dir, split):
    for sample in assembly101.iter_assembly101_samples(os.fspath(manual_dir), split, 'action'):
      yield _example(sample, id=sample.id,
                     verb=-1 if sample.verb is None else sample.verb,
                     noun=-1 if sample.noun is None else sample.noun,
                     pose_missing=sample.pose_missing)


BUILDERS = {cls.name: cls for cls in (NtuMutual26, Ntu120, NtuMutual11, SbuKinectInteraction,
                                      H2o, Assembly101)}


def check_manual_dir(builder: tfds.core.DatasetBuilder, manual_dir) -> None:
  """Raises DataError if manual_dir lacks what `builder` (with its config) reads."""
  if isinstance(builder, SbuKinectInteraction):
    builder.check_manual_dir(manual_dir, builder.builder_config.name)
  else:
    builder.check_manual_dir(manual_dir)
