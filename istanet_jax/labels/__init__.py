"""Class names of every label set the configs train on, one `<set>.txt` per set in this folder.

Each file holds one class name per line; line i (0-based) names class id i as our readers
label it (`data_pipelines/<dataset>.py`). `class_names(...)` returns the list for a config, a
TFDS dataset name or a set name.

  set                  classes  source
  ntu120               120      NTU RGB+D 120 action list A1..A120 (README.md of
                                github.com/shahroudy/NTURGB-D, commit ac2ebc8, 2022), label =
                                action - 1; trailing periods dropped, typographic apostrophes
                                made ASCII
  ntu_mutual26         26       A50..A60 then A106..A120 of that list: the order of
                                `data_pipelines.ntu.class_label(label, 'mutual26')` (configs/ntu26)
  ntu_mutual11         11       A50..A60 (`class_label(label, 'mutual11')`, the ntu_mutual11
                                builder)
  sbu                  8        the label folders 01..08 of SBU-Kinect-Interaction 2.0
                                (approaching .. exchanging; Yun et al., CVPR-W 2012, and the
                                dataset's README), label = folder - 1
  h2o                  36       action_label 1..36 of the H2O README (github.com/taeinkwon/
                                h2odataset), label = action_label - 1 (0, background, is never
                                a clip label)
  assembly101_action   1380     actions.csv of github.com/assembly-101/assembly101-action-
  assembly101_verb     24       recognition (MS-G3D-action-recognition/CSVs/, commit f74ec88):
  assembly101_noun     90       `action_cls`, `verb_cls`, `noun_cls` by `action_id`, `verb_id`,
                                `noun_id`, the columns our reader takes labels from
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Union

import ml_collections

LABEL_SETS = ('ntu120', 'ntu_mutual26', 'ntu_mutual11', 'sbu', 'h2o', 'assembly101_action',
              'assembly101_verb', 'assembly101_noun')
# TFDS builder name -> label set (Assembly101 depends on the config's label_key).
_DATASET_SETS = {'ntu120': 'ntu120', 'ntu_mutual26': 'ntu_mutual26',
                 'ntu_mutual11': 'ntu_mutual11', 'sbu_kinect_interaction': 'sbu', 'h2o': 'h2o'}
_ASSEMBLY101_KEYS = {'label': 'assembly101_action', 'verb': 'assembly101_verb',
                     'noun': 'assembly101_noun'}


def label_set(dataset_or_config: Union[str, ml_collections.ConfigDict]) -> str:
  """The label set's name for a config, a TFDS dataset name ('ntu_mutual26/xsub') or a set name.

  Raises ValueError naming what it was given when no set is known for it.
  """
  if isinstance(dataset_or_config, str):
    name, label_key = dataset_or_config, 'label'
  else:
    name, label_key = dataset_or_config.dataset, dataset_or_config.get('label_key', 'label')
  if name in LABEL_SETS:
    return name
  builder = name.split('/')[0]
  if builder == 'assembly101':
    if label_key not in _ASSEMBLY101_KEYS:
      raise ValueError(f'assembly101: no class names for label_key {label_key!r}; known: '
                       f'{sorted(_ASSEMBLY101_KEYS)}')
    return _ASSEMBLY101_KEYS[label_key]
  if builder not in _DATASET_SETS:
    raise ValueError(f'{name!r}: no class names for this dataset; known datasets: '
                     f'{sorted(_DATASET_SETS) + ["assembly101"]}, label sets: {list(LABEL_SETS)}')
  return _DATASET_SETS[builder]


@functools.lru_cache(maxsize=None)
def _read(set_name: str) -> tuple[str, ...]:
  text = importlib.resources.files(__package__).joinpath(f'{set_name}.txt').read_text('utf-8')
  return tuple(text.splitlines())


def class_names(dataset_or_config: Union[str, ml_collections.ConfigDict]) -> list[str]:
  """Class names indexed by class id, for a config, a TFDS dataset name or a label-set name.

  For a config, also checks that the list has `config.model.num_classes` entries.
  """
  set_name = label_set(dataset_or_config)
  names = list(_read(set_name))
  if not isinstance(dataset_or_config, str):
    num_classes = dataset_or_config.model.num_classes
    if len(names) != num_classes:
      raise ValueError(f'{dataset_or_config.dataset}: the config has {num_classes} classes, '
                       f'label set {set_name} has {len(names)} names')
  return names
