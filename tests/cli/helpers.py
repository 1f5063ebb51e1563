"""Running the real ``vertexflow`` command in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def vf(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "vertexflow", *args], capture_output=True, text=True,
                       env=full_env, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)
