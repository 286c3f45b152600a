"""Networks: the SPADE generator, its VAE style encoder and the multiscale discriminator."""

from synthsat.models.discriminator import MultiscaleDiscriminator, PatchDiscriminator
from synthsat.models.encoder import StyleEncoder
from synthsat.models.spade import SPADE, SPADEGenerator, SPADEResBlock, mask_to_onehot

__all__ = [
    "SPADE",
    "MultiscaleDiscriminator",
    "PatchDiscriminator",
    "SPADEGenerator",
    "SPADEResBlock",
    "StyleEncoder",
    "mask_to_onehot",
]
