"""Pose-layout adapters: keypoints of common pose estimators in the joint orders our models take.

This module owns the joint maps from other keypoint layouts to the datasets' own (the orders
of `data_pipelines/{ntu,h2o,assembly101}.py`, drawn by `istanet_jax/viz.py`), used by
`python -m istanet_jax.predict --adapter NAME`. An adapter takes (T, V_src, M, C) and gives
(T, V, M, C): each target joint is the mean of its source joints (one source: a copy). A
source joint whose coordinates are all exactly 0 counts as missing (the convention of OpenPose,
pyskl and our readers) and is left out of the mean; a target joint with no present source is 0.
Coordinates are not rescaled or re-centred: bring them to the dataset's units first (NTU and
H2O: metres; Assembly101: millimetres), or use predict's `--scale`.

mediapipe_hands -> h2o (21 per hand): the identity. MediaPipe Hands and H2O both list the wrist,
then thumb CMC, MCP, IP, tip, then index, middle, ring and pinky MCP, PIP, DIP, tip (H2O's hand
graph in viz.H2O_HAND_BONES / the reference's graph/h2o.py). Entities: H2O's are left hand,
right hand, object; give hands in that order (the object slot is zero-filled by predict).

mediapipe_hands -> assembly101 (21 per hand): Assembly101's landmarks are in the order of Meta's
hand tracker (UmeTrack; `LANDMARK` of github.com/facebookresearch/hand_tracking_toolkit), which
the reference's graph/asb101.py draws:

  target                       source (MediaPipe)    target                   source
  0  thumb tip                 4  THUMB_TIP          11 middle proximal (MCP) 9  MIDDLE_MCP
  1  index tip                 8  INDEX_TIP          12 middle intermediate   10 MIDDLE_PIP
  2  middle tip                12 MIDDLE_TIP         13 middle distal         11 MIDDLE_DIP
  3  ring tip                  16 RING_TIP           14 ring proximal         13 RING_MCP
  4  pinky tip                 20 PINKY_TIP          15 ring intermediate     14 RING_PIP
  5  wrist                     0  WRIST              16 ring distal           15 RING_DIP
  6  thumb intermediate (MCP)  2  THUMB_MCP          17 pinky proximal        17 PINKY_MCP
  7  thumb distal (IP)         3  THUMB_IP           18 pinky intermediate    18 PINKY_PIP
  8  index proximal (MCP)      5  INDEX_FINGER_MCP   19 pinky distal          19 PINKY_DIP
  9  index intermediate        6  INDEX_FINGER_PIP   20 palm centre           mean(0, 9) *
  10 index distal              7  INDEX_FINGER_DIP
  MediaPipe's THUMB_CMC (1) has no counterpart and is dropped (as the toolkit's MANO map drops
  MANO's thumb CMC). * Our approximation: the midpoint of the wrist and the middle MCP.

openpose_body25 -> ntu (25 joints; NTU's left/right are the subject's, as OpenPose's):

  target             source (BODY_25)           target              source
  0  spine base      8  MidHip                  13 left knee        13 LKnee
  1  spine mid       mean(1 Neck, 8 MidHip) *   14 left ankle       14 LAnkle
  2  neck            mean(1 Neck, 0 Nose) *     15 left foot        mean(19 LBigToe, 20 LSmallToe)
  3  head            mean(0 Nose, 17 REar,      16 right hip        9  RHip
                     18 LEar) *                 17 right knee       10 RKnee
  4  left shoulder   5  LShoulder               18 right ankle      11 RAnkle
  5  left elbow      6  LElbow                  19 right foot       mean(22 RBigToe, 23 RSmallToe)
  6  left wrist      7  LWrist                  20 spine shoulder   1  Neck
  7  left hand       7  LWrist *                21 left hand tip    7  LWrist *
  8  right shoulder  2  RShoulder               22 left thumb       7  LWrist *
  9  right elbow     3  RElbow                  23 right hand tip   4  RWrist *
  10 right wrist     4  RWrist                  24 right thumb      4  RWrist *
  11 right hand      4  RWrist *
  12 left hip        12 LHip

coco17 -> ntu (25 joints; COCO-17 as MMPose / pyskl 2D pickles write it):

  target             source (COCO-17)                target              source
  0  spine base      mean(11 l_hip, 12 r_hip) *      13 left knee        13 l_knee
  1  spine mid       mean(5, 6, 11, 12) *            14 left ankle       15 l_ankle
  2  neck            mean(5 l_shoulder, 6 r_shoulder, 15 left foot       15 l_ankle *
                     0 nose) *                       16 right hip        12 r_hip
  3  head            mean(0 nose, 3 l_ear, 4 r_ear) * 17 right knee      14 r_knee
  4  left shoulder   5  l_shoulder                   18 right ankle      16 r_ankle
  5  left elbow      7  l_elbow                      19 right foot       16 r_ankle *
  6  left wrist      9  l_wrist                      20 spine shoulder   mean(5, 6) *
  7  left hand       9  l_wrist *                    21 left hand tip    9  l_wrist *
  8  right shoulder  6  r_shoulder                   22 left thumb       9  l_wrist *
  9  right elbow     8  r_elbow                      23 right hand tip   10 r_wrist *
  10 right wrist     10 r_wrist                      24 right thumb      10 r_wrist *
  11 right hand      10 r_wrist *
  12 left hip        11 l_hip

  * synthesised: the source has no such joint; hands, hand tips and thumbs collapse onto the
    wrist, feet onto the toes (BODY_25) or the ankle (COCO), the spine onto joint means.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Adapter:
  """A joint map: target joint j is the mean of the present source joints `sources[j]`."""

  name: str
  layout: str  # the target dataset layout (`viz.LAYOUTS` names): 'ntu', 'h2o', 'assembly101'
  num_source_joints: int
  sources: tuple[tuple[int, ...], ...]

  def __post_init__(self):
    for j, src in enumerate(self.sources):
      if not src or not all(0 <= s < self.num_source_joints for s in src):
        raise ValueError(f'{self.name}: target joint {j} has bad sources {src}')

  @property
  def num_joints(self) -> int:
    return len(self.sources)

  def matrix(self) -> np.ndarray:
    """float64 (V, V_src): 1 where a target joint takes a source joint."""
    m = np.zeros((self.num_joints, self.num_source_joints))
    for j, src in enumerate(self.sources):
      m[j, list(src)] = 1.0
    return m

  def __call__(self, x: np.ndarray, source: str = '<array>') -> np.ndarray:
    """(T, V_src, M, C) -> float32 (T, V, M, C); ValueError naming `source` for a wrong shape."""
    x = np.asarray(x)
    if x.ndim != 4:
      raise ValueError(f'{source}: --adapter {self.name} needs a (T, V, M, C) array, got '
                       f'shape {x.shape}')
    if x.shape[1] != self.num_source_joints:
      raise ValueError(f'{source}: {x.shape[1]} joints per entity, but --adapter {self.name} '
                       f'takes {self.num_source_joints}')
    x = x.astype(np.float64)
    m = self.matrix()
    present = np.any(x != 0, axis=-1).astype(np.float64)  # (T, V_src, M)
    total = np.einsum('tvmc,wv->twmc', x, m)  # missing joints are 0: they add nothing
    count = np.einsum('tvm,wv->twm', present, m)
    return (total / np.maximum(count, 1.0)[..., None]).astype(np.float32)


def _one(*indices) -> tuple[tuple[int, ...], ...]:
  return tuple((i,) for i in indices)


_MEDIAPIPE_TO_ASSEMBLY101 = _one(4, 8, 12, 16, 20, 0, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17,
                                 18, 19) + ((0, 9),)

_BODY25_TO_NTU = (
    (8,), (1, 8), (1, 0), (0, 17, 18),    # spine base, spine mid, neck, head
    (5,), (6,), (7,), (7,),               # left shoulder, elbow, wrist, hand
    (2,), (3,), (4,), (4,),               # right shoulder, elbow, wrist, hand
    (12,), (13,), (14,), (19, 20),        # left hip, knee, ankle, foot
    (9,), (10,), (11,), (22, 23),         # right hip, knee, ankle, foot
    (1,),                                 # spine shoulder
    (7,), (7,), (4,), (4,))               # left hand tip, thumb, right hand tip, thumb

_COCO17_TO_NTU = (
    (11, 12), (5, 6, 11, 12), (5, 6, 0), (0, 3, 4),
    (5,), (7,), (9,), (9,),
    (6,), (8,), (10,), (10,),
    (11,), (13,), (15,), (15,),
    (12,), (14,), (16,), (16,),
    (5, 6),
    (9,), (9,), (10,), (10,))

# name -> target layout -> adapter.
ADAPTERS: Mapping[str, Mapping[str, Adapter]] = {
    'mediapipe_hands': {
        'h2o': Adapter('mediapipe_hands', 'h2o', 21, _one(*range(21))),
        'assembly101': Adapter('mediapipe_hands', 'assembly101', 21, _MEDIAPIPE_TO_ASSEMBLY101),
    },
    'openpose_body25': {'ntu': Adapter('openpose_body25', 'ntu', 25, _BODY25_TO_NTU)},
    'coco17': {'ntu': Adapter('coco17', 'ntu', 17, _COCO17_TO_NTU)},
}

# TFDS builder name (config.dataset before the '/') -> joint layout.
_DATASET_LAYOUTS = {'ntu_mutual26': 'ntu', 'ntu120': 'ntu', 'ntu_mutual11': 'ntu',
                    'sbu_kinect_interaction': 'sbu', 'h2o': 'h2o', 'assembly101': 'assembly101'}


def layout_of(dataset: str) -> str:
  """'ntu' | 'sbu' | 'h2o' | 'assembly101' for a config's dataset ('ntu_mutual26/xsub')."""
  builder = dataset.split('/')[0]
  if builder not in _DATASET_LAYOUTS:
    raise ValueError(f'dataset {dataset!r}: unknown joint layout; known datasets: '
                     f'{sorted(_DATASET_LAYOUTS)}')
  return _DATASET_LAYOUTS[builder]


def get_adapter(name: str, layout: str) -> Adapter:
  """The adapter `name` into `layout`; ValueError listing what exists otherwise."""
  if name not in ADAPTERS:
    raise ValueError(f'--adapter {name!r}: unknown adapter; choose one of '
                     f'{", ".join(sorted(ADAPTERS))}')
  if layout not in ADAPTERS[name]:
    raise ValueError(f'--adapter {name}: maps into the {", ".join(sorted(ADAPTERS[name]))} '
                     f'joint layout, not into {layout} (the config\'s dataset)')
  return ADAPTERS[name][layout]
