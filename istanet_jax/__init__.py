"""istanet-jax: ISTA-Net for interactive skeleton action recognition in JAX/Flax."""

from istanet_jax.model import ISTANet, apply_model

__all__ = ['ISTANet', 'apply_model']
