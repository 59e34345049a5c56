"""Audio capture: a real PortAudio stream from a private PulseAudio server, error mapping, FileStream.

The PulseAudio tests need the Debian packages libportaudio2 pulseaudio pulseaudio-utils
libasound2-plugins (and espeak-ng sox for the speech fixture); without them they skip, naming
the packages, and under CI=true they fail (system_deps).
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import soxr

from edge_runtime import capture
from edge_runtime.capture import (
    DeviceLostError, FileStream, MicrophoneStream, list_input_devices, resolve_input_device,
)
from edge_runtime.cli import main as cli_main
from edge_runtime.commands.devices import format_devices
from edge_runtime.errors import AudioError, DeviceError, MissingExtraError

import system_deps
from pulse_rig import PulseRig
from speech_fixture import make_speech_wav

REPO_ROOT = Path(__file__).resolve().parents[1]


# -- helpers -------------------------------------------------------------------------------------

@contextmanager
def pulse_environment(rig: PulseRig):
    """Point this process's PortAudio (ALSA pulse plugin) at `rig`, restoring the environment after."""
    saved = {key: os.environ.get(key) for key in rig.env}
    os.environ.update(rig.env)
    capture.rescan_devices()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        capture.rescan_devices()


def find_offset(captured: np.ndarray, reference: np.ndarray) -> int:
    """Lag at which `reference` best matches inside `captured` (FFT cross-correlation)."""
    assert len(captured) >= len(reference), (len(captured), len(reference))
    size = 1 << int(np.ceil(np.log2(len(captured) + len(reference))))
    corr = np.fft.irfft(np.fft.rfft(captured, size) * np.conj(np.fft.rfft(reference, size)), size)
    return int(np.argmax(corr[: len(captured) - len(reference) + 1]))


def record_while_playing(rig: PulseRig, mic: MicrophoneStream, wav, extra_s: float = 0.6) -> np.ndarray:
    """Play `wav` into the virtual microphone and return everything `mic` captured meanwhile."""
    got = []
    player = rig.play(wav)
    deadline = time.monotonic() + 60
    while player.poll() is None and time.monotonic() < deadline:
        got.append(mic.read(timeout=0.1))
    assert player.returncode == 0, player.stderr.read()
    end = time.monotonic() + extra_s
    while time.monotonic() < end:
        got.append(mic.read(timeout=0.1))
    return np.concatenate(got)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    # 0.5 s of leading silence (the rig's first ~50 ms are not captured)
    ssml = '<speak>Hello there, this is the microphone test.<break time="400ms"/>Goodbye.</speak>'
    return make_speech_wav(tmp_path_factory.mktemp("capture") / "speech.wav", ssml, lead_s=0.5, tail_s=0.3)


@pytest.fixture(scope="module")
def reference(speech_wav) -> np.ndarray:
    samples, rate = sf.read(speech_wav, dtype="float32")
    assert rate == 16000
    return samples


@pytest.fixture(scope="module")
def pulse():
    system_deps.require(*system_deps.PULSE_RIG)  # first: sounddevice cannot load without PortAudio
    system_deps.importorskip("sounddevice", "live")
    with PulseRig() as rig, pulse_environment(rig):
        yield rig


# -- real capture through PulseAudio -------------------------------------------------------------

def test_devices_lists_the_pulse_device(pulse, capsys):
    devices = list_input_devices()
    names = [d["name"] for d in devices]
    assert "pulse" in names
    assert sum(d["default"] for d in devices) == 1
    assert cli_main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "pulse" in out and "* = default input device" in out


def test_microphone_captures_fixture_near_bit_exact(pulse, speech_wav, reference):
    with MicrophoneStream("pulse", samplerate=16000) as mic:
        assert mic.input_rate == 16000
        captured = record_while_playing(pulse, mic, speech_wav)
    assert mic.read() is not None and mic.read() is None  # after close: what is left, then None
    lag = find_offset(captured, reference)
    aligned = captured[lag:lag + len(reference)]
    # 16 kHz s16 null sink, no resampling anywhere: the samples come back as written
    assert np.max(np.abs(aligned - reference)) <= 1.0 / 32768
    assert mic.overflows == 0 and mic.lost_seconds == 0


def test_microphone_at_device_rate_is_resampled_to_16k(pulse, speech_wav, reference):
    with MicrophoneStream(None, block_seconds=0.02) as mic:  # the default device, at its own rate
        assert mic.input_rate != 16000  # pulse's ALSA device defaults to 44.1/48 kHz
        captured = record_while_playing(pulse, mic, speech_wav)
    lag = find_offset(captured, reference)
    aligned = captured[lag:lag + len(reference)]
    # two resamplers in a row (PulseAudio up, soxr down): close, not exact
    assert np.corrcoef(aligned, reference)[0, 1] > 0.999
    assert np.sqrt(np.mean((aligned - reference) ** 2)) < 0.1 * np.sqrt(np.mean(reference ** 2))


def test_lost_device_raises_and_keeps_captured_audio(pulse, speech_wav, reference):
    with PulseRig() as doomed, pulse_environment(doomed):
        mic = MicrophoneStream("pulse", samplerate=16000)
        player = doomed.play(speech_wav)
        got = []
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            got.append(mic.read(timeout=0.1))
        doomed.kill_server()
        player.wait(timeout=10)
        with pytest.raises(DeviceLostError) as lost:
            for _ in range(200):  # the stream ends (or stalls) well within this
                got.append(mic.read(timeout=0.1))
        got.append(lost.value.samples)
        with pytest.raises(DeviceLostError):
            mic.read(timeout=0.1)
        mic.close()
    captured = np.concatenate(got)
    # the first second of speech was played before the server died: it was all captured
    head = reference[: 16000 + 8000]
    lag = find_offset(captured, head)
    assert np.max(np.abs(captured[lag:lag + len(head)] - head)) <= 1.0 / 32768


# -- no device, no PortAudio: one clear error line -----------------------------------------------

def test_no_device_environment_gives_clear_cli_error(tmp_path):
    """With no audio server and no sound card (CI machines), PortAudio sees no input device."""
    system_deps.require("libportaudio2")  # first: sounddevice cannot load without it
    system_deps.importorskip("sounddevice", "live")
    (tmp_path / "client.conf").write_text("autospawn = no\n")
    env = dict(os.environ)
    env.update({
        "PULSE_SERVER": f"unix:{tmp_path}/no-such-socket",
        "PULSE_CLIENTCONFIG": str(tmp_path / "client.conf"),
        "XDG_RUNTIME_DIR": str(tmp_path),
    })
    result = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "devices"], env=env, capture_output=True, text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "no audio input device found" in lines[0] and "`edge-moss devices`" in lines[0]
    probe = subprocess.run(
        [sys.executable, "-c",
         "from edge_runtime.capture import MicrophoneStream\n"
         "from edge_runtime.errors import DeviceError\n"
         "try:\n    MicrophoneStream()\nexcept DeviceError as e:\n    print(type(e).__name__, e)"],
        env=env, capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    )
    assert probe.stdout.startswith("DeviceError no audio input device found")


def test_missing_portaudio_maps_to_device_error(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    with pytest.raises(DeviceError, match="PortAudio library not found: install libportaudio2"):
        list_input_devices()
    assert cli_main(["devices"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libportaudio2" in err[0]


def test_missing_sounddevice_maps_to_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(MissingExtraError, match=r"edge-moss\[live\]"):
        MicrophoneStream()


# -- a fake sounddevice: callback path, overflows, device loss, name lookup ----------------------

class FakePortAudioError(Exception):
    pass


class FakeInputStream:
    def __init__(self, device, samplerate, channels, dtype, blocksize, callback, finished_callback):
        self.device, self.samplerate, self.channels = device, samplerate, channels
        self.blocksize, self.callback, self.finished_callback = blocksize, callback, finished_callback
        self.active = False

    def start(self):
        self.active = True

    def stop(self):
        if self.active:
            self.active = False
            self.finished_callback()

    def close(self):
        self.active = False

    def feed(self, block: np.ndarray, overflow: bool = False):
        self.callback(block, len(block), None, SimpleNamespace(input_overflow=overflow))


class FakeSoundDevice:
    PortAudioError = FakePortAudioError

    def __init__(self, devices, default_input=-1, mono_ok=True):
        self._devices = devices
        self.default = SimpleNamespace(device=[default_input, -1])
        self.mono_ok = mono_ok
        self.streams: list[FakeInputStream] = []

    def query_devices(self, device=None, kind=None):
        if kind == "input":
            raise FakePortAudioError("Error querying device -1")
        return self._devices

    def query_hostapis(self):
        return [{"name": "Fake API"}]

    def check_input_settings(self, device, channels, samplerate, dtype):
        if channels == 1 and not self.mono_ok:
            raise FakePortAudioError("Invalid number of channels")

    def InputStream(self, **kwargs):
        self.streams.append(FakeInputStream(**kwargs))
        return self.streams[-1]


def fake_device(index, name, inputs=2, rate=48000.0):
    return {"index": index, "name": name, "hostapi": 0, "max_input_channels": inputs,
            "max_output_channels": 2, "default_samplerate": rate}


@pytest.fixture
def fake_sd(monkeypatch):
    sd = FakeSoundDevice(
        [fake_device(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)"),
         fake_device(1, "HDMI out", inputs=0),
         fake_device(2, "USB Microphone: Audio (hw:2,0)"),
         fake_device(3, "pulse"),
         fake_device(4, "default")],
        default_input=4, mono_ok=False,
    )
    monkeypatch.setattr(capture, "_sounddevice", lambda: sd)
    return sd


def test_list_and_resolve_devices(fake_sd):
    devices = list_input_devices()
    assert [d["index"] for d in devices] == [0, 2, 3, 4]  # the output-only device is not listed
    assert [d["default"] for d in devices] == [False, False, False, True]
    assert devices[0]["hostapi"] == "Fake API" and devices[0]["samplerate"] == 48000.0
    assert resolve_input_device(None)["index"] == 4
    assert resolve_input_device(2)["index"] == 2
    assert resolve_input_device("2")["index"] == 2
    assert resolve_input_device("PULSE")["index"] == 3
    assert resolve_input_device("usb")["index"] == 2  # a unique part of a name
    with pytest.raises(DeviceError, match="no input device with index 1"):
        resolve_input_device(1)  # output only
    with pytest.raises(DeviceError, match="ambiguous"):
        resolve_input_device("hw:")
    with pytest.raises(DeviceError, match="close matches: pulse.*edge-moss devices"):
        resolve_input_device("plse")


def test_no_input_device_and_no_default(monkeypatch, capsys):
    sd = FakeSoundDevice([fake_device(0, "HDMI out", inputs=0)])
    monkeypatch.setattr(capture, "_sounddevice", lambda: sd)
    assert list_input_devices() == []
    with pytest.raises(DeviceError, match="no audio input device found; run `edge-moss devices`"):
        MicrophoneStream()
    assert cli_main(["devices"]) == 2
    assert "no audio input device found" in capsys.readouterr().err
    sd._devices = [fake_device(0, "USB Microphone")]  # an input, but none is the default
    with pytest.raises(DeviceError, match="no default audio input device.*--device"):
        MicrophoneStream()


def test_callback_path_counts_overflows_and_resamples(fake_sd):
    rng = np.random.default_rng(0)
    blocks = [rng.normal(0, 0.1, (1440, 2)).astype(np.float32) for _ in range(20)]
    mic = MicrophoneStream("usb", block_seconds=0.03)
    stream = fake_sd.streams[-1]
    assert (stream.samplerate, stream.channels, stream.blocksize) == (48000, 2, 1440)
    for i, block in enumerate(blocks):
        stream.feed(block, overflow=i in (3, 7))
    assert mic.overflows == 2
    first = mic.read(timeout=0)
    stream.feed(blocks[0])
    mic.close()
    rest = mic.read(timeout=1)
    assert mic.read() is None
    mono = np.concatenate(blocks + blocks[:1]).mean(axis=1, dtype=np.float32)
    expected = soxr.resample(mono, 48000, 16000, "HQ")
    np.testing.assert_array_equal(np.concatenate([first, rest]), expected)


def _drain(mic, timeout: float = 1.0) -> np.ndarray:
    mic.close()
    parts = []
    while (part := mic.read(timeout=timeout)) is not None:
        parts.append(part)
    return np.concatenate(parts)


def test_a_reader_far_behind_loses_nothing_sample_exact(fake_sd):
    # Room for 5 blocks in memory; 40 arrive before the first read, more while reading: the rest
    # waits in the spill file and comes back in order, bit for bit what soxr gives for all of it.
    rng = np.random.default_rng(1)
    blocks = [rng.normal(0, 0.1, (1440, 2)).astype(np.float32) for _ in range(60)]
    mic = MicrophoneStream("usb", block_seconds=0.03, queue_seconds=0.15)
    mic._spill_take = 4 * 1440  # read the spill back 4 blocks at a time
    stream = fake_sd.streams[-1]
    for block in blocks[:40]:
        stream.feed(block)
    assert mic.spilled_seconds == pytest.approx(35 * 0.03)
    got = [mic.read(timeout=0)]
    for block in blocks[40:50]:  # still spilling: new blocks must queue behind the spilled ones
        stream.feed(block)
    got += [mic.read(timeout=0) for _ in range(3)]
    for block in blocks[50:]:
        stream.feed(block)
    got.append(_drain(mic))
    assert mic.lost_seconds == 0
    expected = soxr.resample(np.concatenate(blocks).mean(axis=1, dtype=np.float32), 48000, 16000, "HQ")
    np.testing.assert_array_equal(np.concatenate(got), expected)


def test_a_slow_consumer_thread_loses_nothing(fake_sd):
    # A producer thread at 10x real time against a reader that sleeps 50 ms between reads.
    import threading

    rng = np.random.default_rng(2)
    blocks = [rng.normal(0, 0.1, (480, 2)).astype(np.float32) for _ in range(400)]
    mic = MicrophoneStream(3, samplerate=16000, block_seconds=0.03, queue_seconds=0.3)
    stream = fake_sd.streams[-1]

    fed = []

    def produce():
        for block in blocks:
            stream.feed(block)
            fed.append(1)
            time.sleep(0.003)

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 30
    while len(fed) < 30 and time.monotonic() < deadline:  # 3x what the memory queue holds
        time.sleep(0.005)
    got = []
    while producer.is_alive():
        got.append(mic.read(timeout=0.01))
        time.sleep(0.05)
    producer.join()
    got.append(_drain(mic))
    assert mic.spilled_seconds > 0 and mic.lost_seconds == 0
    expected = np.concatenate(blocks).mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(np.concatenate(got), expected)


def test_audio_beyond_the_spill_bound_is_reported_at_once(fake_sd):
    reports = []
    mic = MicrophoneStream(3, samplerate=16000, block_seconds=0.03, queue_seconds=0.15,
                           spill_seconds=0.09, on_loss=reports.append)  # 5 blocks + 3 on disk
    stream = fake_sd.streams[-1]
    for i in range(10):
        stream.feed(np.full((480, 2), i, dtype=np.float32))
    assert mic.lost_seconds == pytest.approx(2 * 0.03)
    deadline = time.monotonic() + 5
    while (not reports or reports[-1] < 0.06 - 1e-9) and time.monotonic() < deadline:
        time.sleep(0.01)
    # The watcher said so without waiting for a read (once per loss it saw: 0.03 then 0.06, or
    # 0.06 at once when both blocks were lost before it woke).
    assert reports and reports[-1] == pytest.approx(0.06) and reports == sorted(reports)
    got = _drain(mic)
    np.testing.assert_array_equal(got, np.repeat(np.arange(8, dtype=np.float32), 480))


def test_spill_file_is_private_and_gone_on_close():
    from edge_runtime.spill import SpillFile

    spill = SpillFile(2, max_frames=10)
    fd = spill._file.fileno()
    assert os.fstat(fd).st_mode & 0o777 == 0o600
    assert spill.append(np.ones((6, 2), np.float32)) and not spill.append(np.ones((5, 2), np.float32))
    np.testing.assert_array_equal(spill.take(4), np.ones((4, 2), np.float32))
    assert spill.pending_frames == 2
    spill.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_finished_stream_is_a_lost_device_with_its_samples(fake_sd):
    mic = MicrophoneStream(3, samplerate=16000)
    stream = fake_sd.streams[-1]
    block = np.linspace(-0.5, 0.5, 480 * 2, dtype=np.float32).reshape(480, 2)
    stream.feed(block)
    stream.active = False
    stream.finished_callback()  # PortAudio ended the stream on its own
    with pytest.raises(DeviceLostError, match="'pulse' stopped") as lost:
        mic.read(timeout=1)
    np.testing.assert_array_equal(lost.value.samples, block.mean(axis=1, dtype=np.float32))
    with pytest.raises(DeviceLostError):
        mic.read(timeout=0)


def test_stalled_device_is_lost(fake_sd):
    mic = MicrophoneStream(3, stall_seconds=0.2)
    with pytest.raises(DeviceLostError, match="no audio for 0.2 s"):
        mic.read()  # no timeout: would wait forever on a dead device without the watchdog


def test_open_failure_is_a_device_error(fake_sd, monkeypatch):
    def refuse(**kwargs):
        raise FakePortAudioError("Device unavailable")

    monkeypatch.setattr(fake_sd, "InputStream", refuse)
    with pytest.raises(DeviceError, match="cannot open input device 'pulse' at 48000 Hz: Device unav"):
        MicrophoneStream("pulse")


def test_format_devices_marks_the_default():
    common = {"channels": 32, "samplerate": 44100.0, "hostapi": "ALSA"}
    text = format_devices([
        {"index": 0, "name": "pulse", "default": False, **common},
        {"index": 1, "name": "default", "default": True, **common},
    ])
    lines = text.splitlines()
    assert lines[1].split() == ["0", "pulse", "32", "44100", "Hz", "ALSA"]
    assert lines[2].split() == ["*", "1", "default", "32", "44100", "Hz", "ALSA"]


# -- FileStream ----------------------------------------------------------------------------------

def read_all(stream) -> np.ndarray:
    parts = []
    while True:
        block = stream.read(timeout=5)
        if block is None:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        parts.append(block)


def test_file_stream_at_16k_is_the_file(speech_wav, reference):
    with FileStream(speech_wav) as stream:
        assert stream.input_rate == 16000
        got = read_all(stream)
        assert stream.ended
    np.testing.assert_array_equal(got, reference)


def test_file_stream_resamples_like_soxr(tmp_path):
    rng = np.random.default_rng(4)
    stereo = rng.normal(0, 0.1, (44100 + 123, 2)).astype(np.float32)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    expected = soxr.resample(stereo.mean(axis=1, dtype=np.float32), 44100, 16000, "HQ")
    with FileStream(path, block_seconds=0.02) as stream:
        np.testing.assert_array_equal(np.concatenate(list(stream)), expected)
    with FileStream(path, realtime=True, block_seconds=0.05) as paced:
        np.testing.assert_array_equal(read_all(paced), expected)


def test_file_stream_errors(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        FileStream(tmp_path / "missing.wav")
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"not audio at all")
    with pytest.raises(AudioError):
        FileStream(bogus)
    broken = tmp_path / "nan.wav"
    sf.write(broken, np.concatenate([np.zeros(16000), [np.nan], np.zeros(16000)]), 16000, subtype="FLOAT")
    stream = FileStream(broken, block_seconds=0.25)
    with pytest.raises(AudioError, match="NaN"):
        read_all(stream)
    stream.close()


def test_file_stream_close_stops_a_realtime_reader(speech_wav):
    stream = FileStream(speech_wav, realtime=True)
    stream.read(timeout=1)
    stream.close()
    assert not stream._reader.is_alive()
    assert stream.read() is None
