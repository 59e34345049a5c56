"""A private PulseAudio server with a virtual microphone, for capture tests on machines with no sound card.

The server gets its own XDG_RUNTIME_DIR (a fresh temporary folder, mode 700) and a null sink
`virtmic_sink` (16 kHz mono s16, no rewinds); the sink's monitor is the default source, so whatever
`play()` sends to the sink comes back, paced in real time, from any recording client -- including
PortAudio's ALSA `pulse` device.  Needs the apt packages pulseaudio, pulseaudio-utils and
libasound2-plugins (plus libportaudio2 for sounddevice).

    with PulseRig() as rig:
        os.environ.update(rig.env)          # PULSE_SERVER for this process's clients
        rig.play("fixture.wav").wait()

The server is stopped by its own pid (never by name) when the context exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SINK_NAME = "virtmic_sink"
SINK_RATE = 16000
REQUIRED_PROGRAMS = ("pulseaudio", "pactl", "paplay")


class PulseRigError(RuntimeError):
    """The private PulseAudio server could not be started or driven."""


def missing_programs() -> list[str]:
    """Programs the rig needs that are not on PATH (empty when the rig can run)."""
    return [name for name in REQUIRED_PROGRAMS if shutil.which(name) is None]


class PulseRig:
    """Start/stop a private PulseAudio server with a null sink whose monitor is the default source."""

    def __init__(self, start_timeout_s: float = 15.0) -> None:
        self.start_timeout_s = start_timeout_s
        self.runtime_dir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._log_file = None

    @property
    def socket_path(self) -> Path:
        assert self.runtime_dir is not None, "rig not started"
        return self.runtime_dir / "pulse" / "native"

    @property
    def server(self) -> str:
        """The PULSE_SERVER value that reaches this server."""
        return f"unix:{self.socket_path}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a client (pactl, paplay, PortAudio) needs to use this server."""
        assert self.runtime_dir is not None, "rig not started"
        return {
            "PULSE_SERVER": self.server,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            # a client must never spawn a server of its own behind our back
            "PULSE_CLIENTCONFIG": str(self.runtime_dir / "client.conf"),
        }

    def _client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        return env

    def start(self) -> "PulseRig":
        missing = missing_programs()
        if missing:
            raise PulseRigError(
                "PulseAudio test rig needs " + ", ".join(missing)
                + ": apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"
            )
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="edge-moss-pulse-"))
        os.chmod(self.runtime_dir, 0o700)
        (self.runtime_dir / "client.conf").write_text("autospawn = no\n")
        self._log_file = open(self.runtime_dir / "server.log", "wb")
        env = self._client_env()
        env["HOME"] = str(self.runtime_dir)  # keep cookies/state out of the real home
        command = [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
            "--use-pid-file=no", "--disable-shm=yes",
            "-L", f"module-native-protocol-unix auth-anonymous=1 socket={self.socket_path}",
            # norewinds=1: without it the first ~120 samples of each played file are lost
            "-L", f"module-null-sink sink_name={SINK_NAME} rate={SINK_RATE} channels=1 "
                  "format=s16le norewinds=1",
            "-L", "module-always-sink",
        ]
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_until_ready()
            self.pactl("set-default-sink", SINK_NAME)
            self.pactl("set-default-source", f"{SINK_NAME}.monitor")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PulseRigError(f"pulseaudio exited with {self.process.returncode}: {self.log_tail()}")
            if self.socket_path.exists():
                probe = subprocess.run(
                    ["pactl", "info"], env=self._client_env(), capture_output=True, timeout=10,
                )
                if probe.returncode == 0:
                    return
            time.sleep(0.05)
        raise PulseRigError(f"pulseaudio did not come up in {self.start_timeout_s} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's log, for error messages."""
        if self.runtime_dir is None:
            return ""
        log = self.runtime_dir / "server.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def pactl(self, *args: str) -> str:
        """Run pactl against this server; returns its stdout."""
        result = subprocess.run(
            ["pactl", *args], env=self._client_env(), capture_output=True, text=True, timeout=10,
        )
        if result.returncode != 0:
            raise PulseRigError(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def play(self, wav_path: str | os.PathLike) -> subprocess.Popen:
        """Start playing a wav file into the virtual microphone; returns the paplay process."""
        return subprocess.Popen(
            ["paplay", f"--device={SINK_NAME}", str(wav_path)],
            env=self._client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def kill_server(self) -> None:
        """Kill the server abruptly (SIGKILL), as a vanished device would look to clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server by its pid and remove its runtime folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None

    def __enter__(self) -> "PulseRig":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
