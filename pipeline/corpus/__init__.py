"""A synthetic music corpus in a few labelled styles (``python -m pipeline.corpus``): what the
default ``tiny`` model is trained on, and the held-out songs its quality is measured on."""
from pipeline.corpus.songs import SPLITS, CorpusSong, corpus_songs, render_song, song_seed
from pipeline.corpus.styles import STYLES, DrumPattern, Style
from pipeline.corpus.synth import SAMPLE_RATE, Timbre

__all__ = ["SAMPLE_RATE", "SPLITS", "STYLES", "CorpusSong", "DrumPattern", "Style", "Timbre", "corpus_songs", "render_song", "song_seed"]
