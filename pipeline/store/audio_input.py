"""Audio files as VQ-VAE input: scanning a folder or URL, reading, resampling and channel mixing.

Encode-only runs (and priming from audio) take WAV/FLAC files at any sampling rate and channel
count. :func:`scan_audio` checks every file first (header only) and raises one ``ValueError``
naming every unreadable, empty or non-audio file, so nothing is encoded from a bad folder.
:func:`load_audio` then reads one file and brings it to the model's rate and channel count,
returning an :class:`AudioNote` (what the file was, what was done) for the manifest.

Resampling is our own band-limited interpolation: each output sample is a Kaiser-windowed sinc
sum of the input samples around its time, with the cutoff below the lower of the two Nyquist
frequencies. The ratio is reduced to ``up / down``; the ``up`` filter phases are tabulated once
when there are few of them (a polyphase filter bank), otherwise computed per output block.
"""
from __future__ import annotations

import io
import logging
import math
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import fsspec
import numpy as np
import soundfile
import xxhash
import torch

from models.checks import is_int

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")
_MAX_BANK = 1 << 22  # filter-bank weights above which phases are computed per block instead
_BLOCK = 16384  # output samples per gather: bounds the temporary [block, taps, channels]


@dataclass(frozen=True)
class AudioSource:
    """One audio file found by :func:`scan_audio` (from its header).

    Attributes:
        url: the file, as fsspec opens it.
        song_id: a valid song id from the path under the scanned root (``dir.name`` for ``dir/name.wav``).
        sampling_rate, channels, frames: as stored in the file.
        format, subtype: soundfile's names (``WAV``/``FLAC``, ``PCM_16``...).
        digest: xxh3-128 of the file's bytes: what tells an encode-only run's resume that a file
            changed (the same bytes moved elsewhere are the same file).
    """

    url: str
    song_id: str
    sampling_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    digest: str = ""

    @property
    def duration_s(self) -> float:
        return self.frames / self.sampling_rate


@dataclass(frozen=True)
class AudioNote:
    """What a file was and what :func:`load_audio` did to it (for the manifest)."""

    source: str
    original_sampling_rate: int
    original_channels: int
    original_frames: int
    sampling_rate: int
    channels: int
    frames: int
    resampled: bool
    channel_mix: str

    @property
    def text(self) -> str:
        """One human-readable line, e.g. ``48000 Hz, 2 ch -> 44100 Hz, 1 ch: resampled; mean of 2 channels``."""
        done = (["resampled"] if self.resampled else []) + ([self.channel_mix] if self.channel_mix != "none" else [])
        return (f"{self.original_sampling_rate} Hz, {self.original_channels} ch -> {self.sampling_rate} Hz, "
                f"{self.channels} ch: {'; '.join(done) or 'unchanged'}")

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "text": self.text}


def scan_audio(url: str, *, skip_other_files: bool = False, ignore: Sequence[str] = ()) -> list[AudioSource]:
    """The WAV/FLAC files at ``url`` (a file, or a folder searched recursively; local or fsspec).

    Hidden files (``.name``) and the files named in ``ignore`` (paths or URLs of this file
    system, e.g. a labels manifest kept beside the audio) are ignored. Sorted by path.

    Raises:
        ValueError: naming every file that is not WAV/FLAC (unless ``skip_other_files``), cannot
            be read as audio, or holds no samples; or when nothing is found; or when two files
            map to the same song id.
    """
    fs, root = fsspec.core.url_to_fs(url)
    ignored = {fsspec.core.url_to_fs(str(path))[1].rstrip("/") for path in ignore}
    if fs.isdir(root):
        paths = sorted(p for p in fs.find(root) if not posixpath.basename(p).startswith(".") and p.rstrip("/") not in ignored)
        base = root.rstrip("/")
    elif fs.isfile(root):
        paths, base = [root], posixpath.dirname(root)
    else:
        raise ValueError(f"audio input {url!r} does not exist (expected a WAV/FLAC file or a folder of them)")
    sources, problems, ids = [], [], {}
    for path in paths:
        full = fs.unstrip_protocol(path) if "://" in url else path
        if not path.lower().endswith(AUDIO_SUFFIXES):
            if skip_other_files:
                logger.info("skipping %s: not a WAV/FLAC file", full)
            else:
                problems.append(f"{full}: not a WAV/FLAC file (expected a name ending in {', '.join(AUDIO_SUFFIXES)})")
            continue
        try:
            with fs.open(path, "rb") as handle:
                info = soundfile.info(handle)
                handle.seek(0)
                digest = _digest(handle)
        except Exception as err:  # libsndfile reports any unreadable content; name the file whatever it was
            problems.append(f"{full}: unreadable as audio ({type(err).__name__}: {err})")
            continue
        if info.frames <= 0 or info.channels <= 0:
            problems.append(f"{full}: empty ({info.frames} samples)")
            continue
        song_id = song_id_from_path(posixpath.relpath(path, base) if base else path)
        if song_id in ids:
            problems.append(f"{full}: gives song id {song_id!r}, as {ids[song_id]} does; rename one of them")
            continue
        ids[song_id] = full
        sources.append(AudioSource(full, song_id, int(info.samplerate), int(info.channels), int(info.frames),
                                   str(info.format), str(info.subtype), digest))
    if problems:
        raise ValueError(f"{len(problems)} bad audio input file(s) under {url!r}:\n  " + "\n  ".join(problems))
    if not sources:
        raise ValueError(f"no WAV/FLAC files found under {url!r}")
    return sources


_DIGEST_BLOCK = 8 * 1024 * 1024


def _digest(handle) -> str:
    """xxh3-128 of a file's bytes, read in blocks."""
    hasher = xxhash.xxh3_128()
    while block := handle.read(_DIGEST_BLOCK):
        hasher.update(block)
    return hasher.hexdigest()


def read_audio(url: str) -> tuple[np.ndarray, int]:
    """A file's audio, float32 [samples, channels], and its sampling rate; ValueError naming the file."""
    try:
        with fsspec.open(url, "rb") as handle:
            audio, rate = soundfile.read(io.BytesIO(handle.read()), dtype="float32", always_2d=True)
    except Exception as err:  # as in scan_audio: any decoding failure is the file's fault
        raise ValueError(f"{url}: unreadable as audio ({type(err).__name__}: {err})") from err
    if audio.shape[0] == 0:
        raise ValueError(f"{url}: empty (0 samples)")
    return audio, int(rate)


def load_audio(source: AudioSource | str, sampling_rate: int, channels: int) -> tuple[np.ndarray, AudioNote]:
    """Read a file and convert it to ``sampling_rate`` and ``channels``.

    Returns:
        float32 [samples, channels] audio and the note of what was done.

    Raises:
        ValueError: naming the file when it holds NaN or infinite samples.
    """
    url = source.url if isinstance(source, AudioSource) else source
    audio, rate = read_audio(url)
    bad = ~np.isfinite(audio)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{url}: {int(bad.sum())} sample value(s) are NaN or infinite (the first at {first / rate:.3f} s): "
                         "not audio the VQ-VAE can encode")
    original_frames, original_channels = audio.shape
    mixed, mix = mix_channels(audio, channels)
    out = resample(mixed, rate, sampling_rate)
    note = AudioNote(url, rate, original_channels, original_frames, sampling_rate, channels, out.shape[0],
                     rate != sampling_rate, mix)
    return out, note


def mix_channels(audio: np.ndarray, channels: int) -> tuple[np.ndarray, str]:
    """Down- or up-mix float [samples, c] audio to ``channels``.

    Fewer channels: output channel ``j`` is the mean of input channels ``j, j + channels, ...``
    (all of them for mono). More: channels are repeated cyclically (mono copied to every channel).

    Returns:
        float32 [samples, channels] and a description (``"none"`` when unchanged).
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must be [samples, channels], got shape {audio.shape}")
    if not is_int(channels) or channels < 1:
        raise ValueError(f"channels must be an integer >= 1, got {channels!r}")
    have = audio.shape[1]
    if have == channels:
        return audio.astype(np.float32, copy=False), "none"
    if have > channels:
        out = np.stack([audio[:, j::channels].mean(axis=1) for j in range(channels)], axis=1)
        how = f"down-mixed: mean of {have} channels" if channels == 1 else f"down-mixed {have} to {channels} channels by averaging"
        return out.astype(np.float32), how
    out = audio[:, [j % have for j in range(channels)]]
    return out.astype(np.float32), f"up-mixed {have} to {channels} channels by repeating"


def resample(audio: np.ndarray, orig_rate: int, new_rate: int, *, zero_crossings: int = 32,
             rolloff: float = 0.95, beta: float = 9.0) -> np.ndarray:
    """Band-limited resampling of float [samples, channels] audio from ``orig_rate`` to ``new_rate``.

    Output sample ``n`` lies at input time ``t = n * orig_rate / new_rate``; it is the sum of the
    inputs within ``zero_crossings`` sinc lobes of ``t`` weighted by a sinc of cutoff ``rolloff``
    times the lower Nyquist frequency and a Kaiser window (``beta``), normalised to unit gain at
    DC. Outside the signal the input is zero.

    Returns:
        float32 [ceil(samples * new_rate / orig_rate), channels]; a copy of the input when the
        rates are equal.
    """
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if not is_int(rate) or rate < 1:
            raise ValueError(f"{name} must be an integer >= 1 Hz, got {rate!r}")
    if audio.ndim != 2:
        raise ValueError(f"audio must be [samples, channels], got shape {audio.shape}")
    if not 0 < rolloff <= 1 or zero_crossings < 1:
        raise ValueError(f"need 0 < rolloff <= 1 and zero_crossings >= 1, got {rolloff}, {zero_crossings}")
    if orig_rate == new_rate:
        return np.array(audio, dtype=np.float32)
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    cutoff = 0.5 * rolloff * min(1.0, up / down)  # cycles per input sample
    half_width = zero_crossings / (2 * cutoff)  # input samples on each side of an output
    reach = math.ceil(half_width)
    offsets = np.arange(-reach, reach + 1)
    n_out = -(-audio.shape[0] * up // down)
    if up * (len(offsets) + down) <= _MAX_BANK:
        bank = _filter_bank(np.arange(up), up, offsets, cutoff, half_width, beta)
        return _polyphase(audio, up, down, n_out, bank, reach)
    return _blockwise(audio, up, down, n_out, lambda phase: _filter_bank(phase, up, offsets, cutoff, half_width, beta), reach)


def _blockwise(audio: np.ndarray, up: int, down: int, n_out: int,
               weights_for: Callable[[np.ndarray], np.ndarray], reach: int) -> np.ndarray:
    """Resample block by block, computing each output's weights (``weights_for(phases)`` ->
    float32 [block, taps]); for ratios with too many phases to tabulate."""
    # Zero padding so every output's taps are inside: [reach + samples + reach + 1, channels].
    padded = torch.from_numpy(np.pad(np.asarray(audio, dtype=np.float32), ((reach, reach + 1), (0, 0))))
    out = torch.empty((n_out, audio.shape[1]), dtype=torch.float32)
    taps = np.arange(2 * reach + 1)
    for first in range(0, n_out, _BLOCK):
        position = np.arange(first, min(first + _BLOCK, n_out), dtype=np.int64) * down
        base, phase = position // up, position % up
        index = torch.from_numpy(base[:, None] + taps[None, :])  # [block, taps] into the padded input
        out[first : first + len(position)] = torch.einsum("bt,btc->bc", torch.from_numpy(weights_for(phase)), padded[index])
    return out.numpy()


def _polyphase(audio: np.ndarray, up: int, down: int, n_out: int, bank: np.ndarray, reach: int) -> np.ndarray:
    """Resample with a tabulated bank (float32 [up, taps], row ``p`` for phase ``p / up``).

    Outputs ``n = r + j * up`` share the phase ``r * down % up`` and start ``r * down // up + j *
    down`` (in the padded input): one strided convolution with ``up`` output channels, channel
    ``r``'s kernel shifted by ``r * down // up``, computes them all.
    """
    taps = bank.shape[1]
    kernels = np.zeros((up, 1, taps + down - 1), dtype=np.float32)
    for r in range(up):
        shift = r * down // up
        kernels[r, 0, shift : shift + taps] = bank[r * down % up]
    steps = -(-n_out // up)
    length = (steps - 1) * down + kernels.shape[2]
    x = np.asarray(audio, dtype=np.float32).T
    padded = np.zeros((x.shape[0], 1, max(length, reach + x.shape[1])), dtype=np.float32)
    padded[:, 0, reach : reach + x.shape[1]] = x
    y = torch.nn.functional.conv1d(torch.from_numpy(padded), torch.from_numpy(kernels), stride=down)  # [c, up, steps]
    return y[:, :, :steps].permute(2, 1, 0).reshape(steps * up, x.shape[0])[:n_out].contiguous().numpy()


def _filter_bank(phase: np.ndarray, up: int, offsets: np.ndarray, cutoff: float, half_width: float,
                 beta: float) -> np.ndarray:
    """Weights float32 [len(phase), taps]: input ``base + offsets[k]`` for an output ``phase / up``
    input samples after ``base``."""
    distance = offsets[None, :] - phase[:, None] / up  # input time minus output time, in input samples
    inside = np.abs(distance) <= half_width
    window = np.where(inside, np.i0(beta * np.sqrt(np.clip(1 - (distance / half_width) ** 2, 0, 1))) / np.i0(beta), 0.0)
    weights = 2 * cutoff * np.sinc(2 * cutoff * distance) * window
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def song_id_from_path(relative_path: str) -> str:
    """A song id from a path under the scanned root: suffix dropped, folders joined by ``.``."""
    stem = posixpath.splitext(relative_path)[0]
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._-") for part in stem.split("/")]
    song_id = ".".join(part for part in parts if part)[-128:].lstrip("._-")
    return song_id or "audio"


def conversion_notes(sources: Sequence[AudioSource], sampling_rate: int, channels: int) -> list[str]:
    """Notes of the files that will be converted (rate or channels differ), for a dry-run summary."""
    return [f"{s.url}: {s.sampling_rate} Hz, {s.channels} ch -> {sampling_rate} Hz, {channels} ch"
            for s in sources if s.sampling_rate != sampling_rate or s.channels != channels]
