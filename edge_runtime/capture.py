"""Audio input as a stream of 16 kHz mono float32 blocks: a microphone (PortAudio) or a file.

Both sources share one path: a producer (PortAudio's callback thread, or a reader thread for a
file) only puts blocks into a queue; read() drains the queue, averages the channels and resamples
to 16 kHz with a streaming soxr resampler, outside the callback.  (A device delivers blocks at its
own rate; edge_runtime.audio already delivers a file's blocks at 16 kHz mono.)

sounddevice is an optional dependency (the `live` extra) and is imported only when a microphone
is used, so the rest of the runtime works on machines without PortAudio.
"""

from __future__ import annotations

import difflib
import itertools
import queue
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soxr

from .audio import iter_audio_blocks
from .errors import AudioError, DeviceError, MissingExtraError
from .spill import SpillFile

TARGET_RATE = 16000
NO_DEVICE_MESSAGE = (
    "no audio input device found; run `edge-moss devices` to list input devices, "
    "and check that a microphone is connected (and, on Linux, that PulseAudio/PipeWire is running)"
)
PORTAUDIO_MISSING_MESSAGE = (
    "PortAudio library not found: install libportaudio2 (Debian/Ubuntu: "
    "`apt-get install libportaudio2`; macOS: `brew install portaudio`) to use a microphone"
)
_END = object()  # queued by the producer when its source has ended


class DeviceLostError(DeviceError):
    """The input device stopped delivering audio; `samples` holds the 16 kHz audio not yet read."""

    def __init__(self, message: str, samples: np.ndarray | None = None) -> None:
        super().__init__(message)
        self.samples = samples if samples is not None else np.zeros(0, dtype=np.float32)


def _sounddevice():
    """Import sounddevice, turning a missing package or PortAudio library into a clear error."""
    try:
        import sounddevice
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "live audio needs the sounddevice package: pip install 'edge-moss[live]'"
        ) from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio is absent
        raise DeviceError(PORTAUDIO_MISSING_MESSAGE) from exc
    return sounddevice


def rescan_devices() -> None:
    """Make PortAudio look for devices again (new USB microphone, audio server started).

    PortAudio lists devices once, when it is initialised; this re-initialises it.  Close every
    open stream first.
    """
    sd = _sounddevice()
    sd._terminate()
    sd._initialize()


def _default_input_index(sd) -> int | None:
    index = sd.default.device[0]
    if index is None or index < 0:
        try:
            index = sd.query_devices(kind="input")["index"]
        except (sd.PortAudioError, ValueError, TypeError, KeyError):
            return None
    return int(index)


def list_input_devices() -> list[dict]:
    """Input devices PortAudio sees: index, name, channels, samplerate, hostapi, default."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}") from exc
    default_index = _default_input_index(sd)
    return [
        {
            "index": int(info["index"]),
            "name": str(info["name"]),
            "channels": int(info["max_input_channels"]),
            "samplerate": float(info["default_samplerate"]),
            "hostapi": str(hostapis[info["hostapi"]]["name"]),
            "default": int(info["index"]) == default_index,
        }
        for info in devices
        if info["max_input_channels"] > 0
    ]


def resolve_input_device(device: int | str | None, devices: list[dict] | None = None) -> dict:
    """The input device meant by `device`: None (default), an index, or a (partial) name."""
    devices = list_input_devices() if devices is None else devices
    if not devices:
        raise DeviceError(NO_DEVICE_MESSAGE)
    if device is None:
        for info in devices:
            if info["default"]:
                return info
        raise DeviceError(
            "no default audio input device; choose one with --device (run `edge-moss devices` to list them)"
        )
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device.strip())
    if isinstance(device, int) and not isinstance(device, bool):
        for info in devices:
            if info["index"] == device:
                return info
        raise DeviceError(
            f"no input device with index {device}; run `edge-moss devices` to list input devices"
        )
    wanted = str(device).strip().lower()
    exact = [info for info in devices if info["name"].lower() == wanted]
    if exact:
        return exact[0]
    partial = [info for info in devices if wanted in info["name"].lower()]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        names = ", ".join(f"{info['index']}: {info['name']}" for info in partial)
        raise DeviceError(f"input device name {device!r} is ambiguous ({names}); use the index")
    close = difflib.get_close_matches(wanted, [info["name"].lower() for info in devices], n=3, cutoff=0.4)
    names = [info["name"] for info in devices if info["name"].lower() in close]
    hint = f"; close matches: {', '.join(names)}" if names else ""
    raise DeviceError(f"no input device named {device!r}{hint} (run `edge-moss devices` to list them)")


class _QueuedSource:
    """Shared consumer side: queue of raw blocks -> mono -> streaming resample to 16 kHz."""

    def __init__(self, input_rate: int, max_queued_blocks: int) -> None:
        self.input_rate = int(input_rate)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued_blocks)
        self._resampler = (
            soxr.ResampleStream(self.input_rate, TARGET_RATE, 1, dtype="float32", quality="HQ")
            if self.input_rate != TARGET_RATE else None
        )
        self._ended = False
        self.samples_read = 0  # 16 kHz samples returned so far

    @property
    def ended(self) -> bool:
        """True once the source's last samples have been returned."""
        return self._ended

    def _take(self, timeout: float | None) -> tuple[list[np.ndarray], bool]:
        """Blocks now queued (waiting up to `timeout` for the first), and whether the source ended."""
        blocks: list[np.ndarray] = []
        try:
            if timeout is not None and timeout <= 0:
                item = self._queue.get_nowait()
            else:
                item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return blocks, False
        while True:
            if item is _END:
                return blocks, True
            blocks.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return blocks, False

    def _convert(self, blocks: list[np.ndarray], last: bool) -> np.ndarray:
        """Raw blocks (frames x channels) to 16 kHz mono float32."""
        if blocks:
            raw = np.concatenate(blocks, axis=0)
            mono = raw.mean(axis=1, dtype=np.float32) if raw.ndim == 2 else raw.astype(np.float32)
        else:
            mono = np.zeros(0, dtype=np.float32)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        mono = np.ascontiguousarray(mono, dtype=np.float32).reshape(-1)
        self.samples_read += len(mono)
        return mono


class MicrophoneStream(_QueuedSource):
    """Live 16 kHz mono float32 audio from an input device; capture starts on construction.

    `device`: None for the default input, an index, or a (partial, case-insensitive) name as
    listed by `edge-moss devices`.  The device is opened at its default rate (or `samplerate`)
    and resampled here.  `overflows` counts PortAudio input overflows (audio lost by the device
    driver, before it reaches us).

    Nothing captured is dropped while the reader is slower than real time: blocks wait in memory
    for up to `queue_seconds`, then in a private temporary file (edge_runtime.spill) for up to
    `spill_seconds` more, and are read back in order.  Only beyond both is audio lost; then
    `lost_seconds` grows and `on_loss(lost_seconds)` is called at once from a watcher thread.
    """

    def __init__(
        self,
        device: int | str | None = None,
        block_seconds: float = 0.03,
        samplerate: int | None = None,
        queue_seconds: float = 60.0,
        stall_seconds: float = 5.0,
        spill_seconds: float = 4 * 3600.0,
        on_loss: Callable[[float], None] | None = None,
    ) -> None:
        sd = _sounddevice()
        self._sd = sd
        info = resolve_input_device(device)
        self.device_index = info["index"]
        self.device_name = info["name"]
        rate = int(samplerate or round(info["samplerate"]))
        self.channels = self._choose_channels(info, rate)
        blocksize = max(1, int(round(block_seconds * rate)))
        super().__init__(rate, max_queued_blocks=max(4, int(queue_seconds / block_seconds)))
        self.overflows = 0
        self.lost_frames = 0  # device frames that neither the queue nor the spill file could hold
        self._lock = threading.Lock()  # orders the callback's queue/spill choice against _take
        self._spill = SpillFile(self.channels, int(spill_seconds * rate))
        self._spilling = False  # True while the spill file holds the newest blocks
        self._spill_take = max(blocksize, int(10 * rate))  # frames read back per read() call
        self._loss_event = threading.Event()
        self.stall_seconds = stall_seconds
        self._closing = False
        self._source_finished = False  # set by PortAudio's finished callback
        self._lost = False  # set once DeviceLostError has been raised
        self._last_block_time = time.monotonic()
        self._loss_watcher = None
        if on_loss is not None:
            self._loss_watcher = threading.Thread(target=self._watch_loss, args=(on_loss,),
                                                  name="edge-moss-capture-loss", daemon=True)
            self._loss_watcher.start()
        try:
            self._stream = sd.InputStream(
                device=self.device_index, samplerate=rate, channels=self.channels,
                dtype="float32", blocksize=blocksize, callback=self._callback,
                finished_callback=self._finished,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self._closing = True  # stops the loss watcher
            self._spill.close()
            raise DeviceError(f"cannot open input device {self.device_name!r} at {rate} Hz: {exc}") from exc

    def _choose_channels(self, info: dict, rate: int) -> int:
        # mono straight from the device when it can; else up to two channels, averaged in read()
        try:
            self._sd.check_input_settings(device=info["index"], channels=1, samplerate=rate, dtype="float32")
            return 1
        except Exception:
            return min(2, info["channels"])

    @property
    def lost_seconds(self) -> float:
        """Seconds of captured audio lost because the queue and the spill file were both full."""
        return self.lost_frames / self.input_rate

    @property
    def spilled_seconds(self) -> float:
        """Seconds of audio that went through the spill file so far (kept, not lost)."""
        return self._spill.spilled_frames / self.input_rate

    # PortAudio thread: copying, counting and (when far behind) one buffered file write
    def _callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.overflows += 1
        with self._lock:
            if not self._spilling:
                try:
                    self._queue.put_nowait(indata.copy())
                    return
                except queue.Full:
                    self._spilling = True  # from now on, blocks queue up on disk, in order
            if not self._spill.append(indata):
                self.lost_frames += frames
                self._loss_event.set()

    def _finished(self) -> None:
        self._source_finished = True
        with self._lock:
            if not self._spilling:  # while spilling, _END would overtake the blocks on disk
                try:
                    self._queue.put_nowait(_END)
                except queue.Full:
                    pass  # read() sees _source_finished once everything is drained

    def _watch_loss(self, on_loss: Callable[[float], None]) -> None:
        while not self._closing:
            if self._loss_event.wait(0.25):
                self._loss_event.clear()
                on_loss(self.lost_seconds)

    def _take(self, timeout: float | None) -> tuple[list[np.ndarray], bool]:
        """The memory queue first (it holds the oldest blocks), then the spill file."""
        blocks, ended = super()._take(0 if self._spilling else timeout)
        if ended:
            return blocks, True
        with self._lock:
            if self._spilling and self._queue.empty():
                spilled = self._spill.take(self._spill_take)
                if spilled is not None:
                    blocks.append(spilled)
                if self._spill.pending_frames == 0:
                    self._spilling = False
        return blocks, False

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """16 kHz samples captured since the last call (waits up to `timeout` s for some).

        Returns an empty array on timeout and None after close().  Raises DeviceLostError when the
        device stops (its `samples` are the audio captured but not yet read) or stalls for
        `stall_seconds`.
        """
        if self._ended:
            return None
        if self._lost:
            raise DeviceLostError(f"audio input device {self.device_name!r} was lost")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            blocks, ended = self._take(wait)
            if blocks:
                self._last_block_time = time.monotonic()
            gone = self._source_finished or not self._stream_active()
            stopped = ended or (not blocks and not self._closing and gone)
            stalled = not blocks and time.monotonic() - self._last_block_time > self.stall_seconds
            if self._closing and (ended or (not blocks and gone)):
                self._ended = True
                self._spill.close()
                return self._convert(blocks, last=True)
            if stopped or stalled:
                self._lost = True
                samples = self._convert(blocks, last=True)
                why = "stopped" if stopped else f"delivered no audio for {self.stall_seconds:g} s"
                raise DeviceLostError(f"audio input device {self.device_name!r} {why}", samples)
            if blocks or (deadline is not None and time.monotonic() >= deadline):
                return self._convert(blocks, last=False)

    def _stream_active(self) -> bool:
        try:
            return bool(self._stream.active)
        except self._sd.PortAudioError:  # closed or gone
            return False

    def close(self) -> None:
        """Stop capturing; later read() calls return what is left, then None."""
        if self._closing:
            return
        self._closing = True
        try:
            self._stream.stop()
            self._stream.close()
        except self._sd.PortAudioError:
            pass  # a lost device may refuse to stop; it is closed either way

    def __enter__(self) -> "MicrophoneStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class FileStream(_QueuedSource):
    """A sound file through the same queue and read() path as a microphone, as 16 kHz mono.

    Blocks come from edge_runtime.audio.iter_audio_blocks (mono, resampled with soxr), read by a
    background thread; with realtime=True they are handed over paced by the clock, as a device
    would.  read() returns the file's last samples at the end, then None.
    """

    def __init__(
        self, path: str | Path, realtime: bool = False, block_seconds: float = 0.03,
    ) -> None:
        self.path = Path(path)
        super().__init__(TARGET_RATE, max_queued_blocks=64)
        self.realtime = realtime
        self._blocks = iter_audio_blocks(self.path, block_seconds=block_seconds, sample_rate=TARGET_RATE)
        # the first block now, so that a missing or unreadable file fails here, not in read()
        self._first = next(self._blocks, None)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._reader = threading.Thread(target=self._produce, name="edge-moss-file-stream", daemon=True)
        self._reader.start()

    def _produce(self) -> None:
        started = time.monotonic()
        produced = 0
        try:
            blocks = self._blocks if self._first is None else itertools.chain([self._first], self._blocks)
            for block in blocks:
                if self._stop.is_set():
                    break
                if self.realtime:  # hand the block over when a device would have
                    produced += len(block)
                    delay = started + produced / TARGET_RATE - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                self._put(block)
        except Exception as exc:  # surfaced by read()
            self._error = exc
        finally:
            self._put(_END)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """16 kHz samples available now (waits up to `timeout` s); the rest at the end; then None."""
        if self._ended:
            return None
        blocks, ended = self._take(timeout)
        if self._error is not None:
            if isinstance(self._error, AudioError):
                raise self._error
            raise AudioError(f"cannot read audio file {self.path}: {self._error}")
        if ended:
            self._ended = True
        return self._convert(blocks, last=ended)

    def __iter__(self):
        """Yield every non-empty block until the end of the file."""
        while True:
            block = self.read()
            if block is None:
                return
            if len(block):
                yield block

    def close(self) -> None:
        """Stop reading the file."""
        self._stop.set()
        self._reader.join(timeout=5)
        self._blocks.close()
        self._ended = True

    def __enter__(self) -> "FileStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
