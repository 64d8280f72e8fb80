"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import platform
import subprocess


def cpu_model() -> str:
    """``lscpu``'s model name with its CPU family and model ("AMD EPYC (family 26, model 2)"): the model
    name alone does not tell one generation of a vendor's CPUs from the next."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("Model name") or platform.processor() or platform.machine()
    if "CPU family" in fields and "Model" in fields:
        return f"{name} (family {fields['CPU family']}, model {fields['Model']})"
    return name
