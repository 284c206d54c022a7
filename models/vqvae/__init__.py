"""Jukebox hierarchical VQ-VAE and its building blocks (reused by the priors' upsampler)."""
from models.vqvae.bottleneck import Bottleneck, CodebookStats, QuantiserOutput, VectorQuantiser
from models.vqvae.decoder import Decoder, DecoderConvBlock
from models.vqvae.encoder import Encoder, EncoderConvBlock
from models.vqvae.resnet import ResConv1DBlock, Resnet1D
from models.vqvae.vqvae import JukeboxVQVAE, VQVAEOutput

__all__ = [
    "Bottleneck",
    "CodebookStats",
    "Decoder",
    "DecoderConvBlock",
    "Encoder",
    "EncoderConvBlock",
    "JukeboxVQVAE",
    "QuantiserOutput",
    "ResConv1DBlock",
    "Resnet1D",
    "VQVAEOutput",
    "VectorQuantiser",
]
