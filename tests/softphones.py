"""Real softphones as test peers: baresip (ctrl_tcp, JSON netstrings) and linphonec (stdin).

Each phone gets a config folder under the test's tmp dir, SIP and RTP on 127.0.0.1 free
ports, no sound card: it sends a WAV file of a sine tone (its own frequency) and records what
it hears to a WAV file, which `dominant_frequency` reads back. Every wait is bounded.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port

RATE = 8000


def require_binary(name: str, package: str) -> str:
    """The binary's path; in CI its absence fails the test, elsewhere it skips it."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install -y {package})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def write_tone(path: Path, frequency: float, seconds: float = 30.0) -> Path:
    """A mono 16-bit 8 kHz WAV of a sine tone (what the phone 'says')."""
    frames = bytearray()
    for i in range(int(RATE * seconds)):
        frames += struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * i / RATE)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(frames))
    return path


def dominant_frequency(path: Path) -> tuple[float, float]:
    """(RMS level, frequency from zero crossings) of a recorded WAV's loud part; (0, 0) if silent."""
    try:   # read the chunks by hand: a file still being written has no data size yet
        raw = path.read_bytes()
    except OSError:
        return 0.0, 0.0
    fmt, data_at = raw.find(b"fmt "), raw.find(b"data")
    if not raw.startswith(b"RIFF") or fmt < 0 or data_at < 0:
        return 0.0, 0.0
    channels, rate = struct.unpack("<HI", raw[fmt + 10: fmt + 16])
    data = raw[data_at + 8:]
    samples = struct.unpack(f"<{len(data) // 2}h", data[: len(data) // 2 * 2])[::channels]
    loud = [s for s in samples if abs(s) > 0]
    # Keep the stretch between the first and last loud sample (skip silence around the call).
    first = next((i for i, s in enumerate(samples) if abs(s) > 500), None)
    if first is None or not loud:
        return 0.0, 0.0
    last = len(samples) - next(i for i, s in enumerate(reversed(samples)) if abs(s) > 500)
    part = samples[first:last]
    if len(part) < rate // 10:
        return 0.0, 0.0
    rms = math.sqrt(sum(s * s for s in part) / len(part))
    crossings = sum(1 for a, b in itertools.pairwise(part) if (a < 0) != (b < 0))
    return rms, crossings / 2 / (len(part) / rate)


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             describe: Callable[[], str] = lambda: "") -> Any:
    """Poll `condition` until truthy (returned) or fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{describe()}")


class Baresip:
    """One baresip with ctrl_tcp; registers `user` at the service and auto-answers."""

    def __init__(self, workdir: Path, user: str, password: str, service_port: int,
                 frequency: float) -> None:
        self.binary = require_binary("baresip", "baresip")
        self.dir = workdir / f"baresip-{user}"
        self.dir.mkdir()
        self.user = user
        self.sip_port = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM, both=False)
        rtp = free_port(both=False)
        tone = write_tone(self.dir / "tone.wav", frequency)
        (self.dir / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen 127.0.0.1:{self.sip_port}\n"
            "net_interface 127.0.0.1\n"
            "audio_player aubridge,play\n"
            f"audio_source aufile,{tone}\n"
            "audio_alert aubridge,alert\n"
            "ausrc_srate 8000\nausrc_channels 1\n"
            f"rtp_ports {rtp}-{rtp + 1}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
            f"snd_path {self.dir}\n"
            "module_tmp account.so\n"
            "module_app menu.so\nmodule_app ctrl_tcp.so\n"
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n")
        (self.dir / "accounts").write_text(
            f"<sip:{user}@127.0.0.1:{service_port}>;auth_pass={password};answermode=auto;"
            "regint=300\n")
        self.log_path = self.dir / "baresip.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (open while the phone runs)
        self.process = subprocess.Popen([self.binary, "-f", str(self.dir), "-v"],
                                        stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        self.events: list[dict] = []
        self._sock: socket.socket | None = None
        self._buffer = b""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def _connect(self) -> socket.socket | None:
        if self._sock is None:
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                return None
            self._sock.settimeout(0.1)
        return self._sock

    def connect(self, timeout: float = 15) -> None:
        wait_for(self._connect, timeout, f"baresip {self.user}'s ctrl_tcp", self.log)

    def command(self, text: str) -> None:
        """Send one command (``dial sip:...``, ``hangup``) as a ctrl_tcp netstring."""
        name, _, params = text.partition(" ")
        body = json.dumps({"command": name, "params": params, "token": name}).encode()
        sock = self._connect()
        assert sock is not None
        sock.sendall(str(len(body)).encode() + b":" + body + b",")

    def poll_events(self) -> list[dict]:
        """Read whatever netstrings arrived (events and command responses)."""
        sock = self._connect()
        if sock is not None:
            try:
                while chunk := sock.recv(65536):
                    self._buffer += chunk
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                self._sock = None
        while b":" in self._buffer:
            size, _, rest = self._buffer.partition(b":")
            if not size.isdigit() or len(rest) < int(size) + 1:
                break
            self.events.append(json.loads(rest[: int(size)]))
            self._buffer = rest[int(size) + 1:]
        return self.events

    def saw(self, event_type: str) -> bool:
        return any(e.get("type") == event_type for e in self.poll_events())

    def heard(self) -> tuple[float, float]:
        """Level and frequency of what this phone decoded (sndfile's dump-*-dec.wav)."""
        files = sorted(self.dir.glob("dump-*-dec.wav"))
        return dominant_frequency(files[-1]) if files else (0.0, 0.0)

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        _stop(self.process)
        self._log.close()


class Linphonec:
    """One linphonec driven through stdin; registers `user` at the service, auto-answers."""

    def __init__(self, workdir: Path, user: str, password: str, service_port: int,
                 frequency: float) -> None:
        self.binary = require_binary("linphonec", "linphone-cli")
        self.dir = workdir / f"linphonec-{user}"
        self.dir.mkdir()
        self.user = user
        self.service_port = service_port
        self.password = password
        self.sip_port = free_port()
        rtp = free_port(both=False)
        self.tone = write_tone(self.dir / "tone.wav", frequency)
        self.record = self.dir / "heard.wav"
        (self.dir / "linphonerc").write_text(
            "[sip]\n"
            f"sip_port={self.sip_port}\nsip_tcp_port=-1\nsip_tls_port=-1\n"
            "bind_address=127.0.0.1\nguess_hostname=1\nregister_only_when_network_is_up=0\n"
            "auto_net_state_mon=0\nregister_only_when_upnp_is_ok=0\n"
            "[rtp]\n"
            f"audio_rtp_port={rtp}\naudio_adaptive_jitt_comp_enabled=1\n"
            "[net]\nnat_policy_ref=\nfirewall_policy=0\n"
            "[sound]\necho_cancellation=0\n"
            "[video]\nenabled=0\ncapture=0\ndisplay=0\n"
            "[audio_codec_0]\nmime=PCMU\nrate=8000\nenabled=1\n"
            "[audio_codec_1]\nmime=PCMA\nrate=8000\nenabled=1\n")
        self.log_path = self.dir / "linphonec.log"
        env = dict(os.environ, HOME=str(self.dir), XDG_CONFIG_HOME=str(self.dir),
                   XDG_DATA_HOME=str(self.dir))
        self.out_path = self.dir / "stdout.txt"
        self._out = open(self.out_path, "wb")  # noqa: SIM115 (open while the phone runs)
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.dir / "linphonerc"), "-a", "-d", "6",
             "-l", str(self.log_path)],
            stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.STDOUT, env=env,
            cwd=str(self.dir))

    def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def log(self) -> str:
        text = self.output()[-3000:]
        try:
            text += "\n--- log ---\n" + self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            pass
        return text

    def start(self) -> None:
        """Use files for sound, then register with digest."""
        self.command(f"ports sip {self.sip_port}")   # linphonec ignores [sip] sip_port
        self.command("soundcard use files")
        self.command(f"play {self.tone}")
        self.command(f"record {self.record}")
        self.command(f"register sip:{self.user}@127.0.0.1 sip:127.0.0.1:{self.service_port} "
                     f"{self.password}")

    def heard(self) -> tuple[float, float]:
        return dominant_frequency(self.record)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.command("quit")
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _stop(self.process)
        self._out.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
