"""`istanet_jax.adapters`: MediaPipe Hands, OpenPose BODY_25 and COCO-17 keypoints in the joint
orders of H2O, Assembly101 and NTU, on hand-made poses whose every joint is recognisable."""

import numpy as np
import pytest

from istanet_jax import adapters, viz


def labelled_pose(num_joints, frames=3, entities=2, channels=3):
  """(T, V, M, C): joint v of entity m in frame t is (v + 1) * (1, 10, 100)[:C] + 1000 m + t."""
  v = np.arange(1, num_joints + 1, dtype=np.float32)[None, :, None, None]
  scale = np.array([1.0, 10.0, 100.0][:channels], np.float32)
  offset = (1000 * np.arange(entities, dtype=np.float32)[None, None, :, None]
            + np.arange(frames, dtype=np.float32)[:, None, None, None])
  return v * scale + offset


def test_coco17_to_ntu_known_joints():
  coco = labelled_pose(17, channels=2)
  ntu = adapters.get_adapter('coco17', 'ntu')(coco)
  assert ntu.shape == (3, 25, 2, 2) and ntu.dtype == np.float32
  copies = {4: 5, 5: 7, 6: 9, 7: 9, 8: 6, 9: 8, 10: 10, 11: 10, 12: 11, 13: 13, 14: 15,
            16: 12, 17: 14, 18: 16, 21: 9, 22: 9, 23: 10, 24: 10}
  for target, source in copies.items():
    np.testing.assert_array_equal(ntu[:, target], coco[:, source], err_msg=f'NTU {target}')
  np.testing.assert_allclose(ntu[:, 0], coco[:, [11, 12]].mean(1))          # spine base
  np.testing.assert_allclose(ntu[:, 1], coco[:, [5, 6, 11, 12]].mean(1))    # spine mid
  np.testing.assert_allclose(ntu[:, 20], coco[:, [5, 6]].mean(1))           # spine shoulder
  np.testing.assert_allclose(ntu[:, 3], coco[:, [0, 3, 4]].mean(1))         # head


def test_missing_source_joints_are_left_out_of_means():
  coco = labelled_pose(17)
  coco[1, [3, 4], 0] = 0     # frame 1, person 0: ears not detected
  coco[2, [0, 3, 4], 1] = 0  # frame 2, person 1: no head keypoint at all
  ntu = adapters.get_adapter('coco17', 'ntu')(coco)
  np.testing.assert_array_equal(ntu[1, 3, 0], coco[1, 0, 0])   # head = nose alone
  np.testing.assert_array_equal(ntu[2, 3, 1], 0)
  np.testing.assert_allclose(ntu[0, 3, 0], coco[0, [0, 3, 4], 0].mean(0))


def test_openpose_body25_to_ntu_known_joints():
  body = labelled_pose(25)
  ntu = adapters.get_adapter('openpose_body25', 'ntu')(body)
  copies = {0: 8, 4: 5, 5: 6, 6: 7, 8: 2, 9: 3, 10: 4, 12: 12, 13: 13, 14: 14, 16: 9, 17: 10,
            18: 11, 20: 1, 21: 7, 23: 4}
  for target, source in copies.items():
    np.testing.assert_array_equal(ntu[:, target], body[:, source], err_msg=f'NTU {target}')
  np.testing.assert_allclose(ntu[:, 1], body[:, [1, 8]].mean(1))     # spine mid: neck, mid-hip
  np.testing.assert_allclose(ntu[:, 15], body[:, [19, 20]].mean(1))  # left foot: left toes
  np.testing.assert_allclose(ntu[:, 19], body[:, [22, 23]].mean(1))  # right foot: right toes


def test_mediapipe_hands_to_assembly101_and_h2o():
  hands = labelled_pose(21)
  asb = adapters.get_adapter('mediapipe_hands', 'assembly101')(hands)
  # Tips 0-4 (thumb..pinky), wrist 5, then each finger from the palm outwards.
  want = [4, 8, 12, 16, 20, 0, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19]
  np.testing.assert_array_equal(asb[:, :20], hands[:, want])
  np.testing.assert_allclose(asb[:, 20], hands[:, [0, 9]].mean(1))  # palm centre
  # Every finger bone of Assembly101's graph lands on a bone of MediaPipe's (= H2O's) graph.
  source = dict(enumerate(want))
  mediapipe_bones = {frozenset(b) for b in viz.H2O_HAND_BONES}
  thumb_and_palm = {(5, 6), (6, 7), (7, 0), (6, 8), (8, 11), (11, 14), (14, 17)}
  finger_bones = [b for b in viz.ASSEMBLY101_BONES if b not in thumb_and_palm]
  assert len(finger_bones) == 16
  for a, b in finger_bones:
    assert frozenset((source[a], source[b])) in mediapipe_bones, (a, b)
  np.testing.assert_array_equal(adapters.get_adapter('mediapipe_hands', 'h2o')(hands), hands)


def test_wrong_joint_count_and_unknown_adapters_are_rejected():
  with pytest.raises(ValueError, match=r'pose\.npy: 25 joints per entity, but --adapter coco17 '
                                       r'takes 17'):
    adapters.get_adapter('coco17', 'ntu')(labelled_pose(25), 'pose.npy')
  with pytest.raises(ValueError, match=r'needs a \(T, V, M, C\) array, got shape \(3, 17\)'):
    adapters.get_adapter('coco17', 'ntu')(np.ones((3, 17)))
  with pytest.raises(ValueError, match="unknown adapter; choose one of coco17, mediapipe_hands"):
    adapters.get_adapter('kinect', 'ntu')
  with pytest.raises(ValueError, match='maps into the ntu joint layout, not into h2o'):
    adapters.get_adapter('coco17', 'h2o')
  assert adapters.layout_of('ntu_mutual26/xsub') == 'ntu'
  assert adapters.layout_of('sbu_kinect_interaction/clean') == 'sbu'
  with pytest.raises(ValueError, match='unknown joint layout'):
    adapters.layout_of('kinetics')


def test_every_adapter_fills_its_layout():
  for by_layout in adapters.ADAPTERS.values():
    for layout, adapter in by_layout.items():
      assert adapter.num_joints == viz.get_layout(layout).num_joints
      assert np.all(adapter.matrix().sum(1) >= 1)
