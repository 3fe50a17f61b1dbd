"""The worker's limits: one record of the rubric's settings (rubric.WORKER), memory sized to the
container this grading runs in (memory.py)."""

from dataclasses import dataclass

from ..rubric_records import WorkerLimits
from ..worker import protocol
from . import memory


@dataclass
class Limits:
    memory_bytes: int  # RLIMIT_DATA of the worker
    cpu_seconds: int  # RLIMIT_CPU
    cpu_cores: float  # CPU all its processes share, where its cgroup has the cpu controller
    file_bytes: int  # RLIMIT_FSIZE
    disk_bytes: int  # all its files together (process.DiskWatch)
    processes: int  # RLIMIT_NPROC of the worker user (as root only)
    output_chars: int  # what the worker prints is cut to this many characters
    reply_bytes: int  # a larger reply frame is refused as malformed
    total_seconds: float  # wall-clock seconds the worker gets for the whole grading
    timeout_budget: float  # once timeouts have cost this many seconds, the remaining checks fail fast
    memory_margin_bytes: int = 0  # a request ending this close to memory_bytes used up the memory
    memory_source: str = ""  # how memory_bytes was sized, for the report

    @classmethod
    def sized(cls, settings: WorkerLimits) -> "Limits":
        """rubric.WORKER's limits, the memory limit sized to this container (memory.py)."""
        fields = {name: value for name, value in vars(settings).items() if name in cls.__dataclass_fields__}
        fields["memory_bytes"], fields["memory_source"] = memory.worker_limit(
            settings.memory_bytes, settings.grader_memory_bytes)
        return cls(**fields)

    def memory_text(self) -> str:
        """The memory limit in a sentence for the student."""
        return protocol.memory_limit_text(self.memory_bytes)

    def memory_used_up(self, used) -> bool:
        """Whether the worker's data size after a request (its own report, a number of bytes)
        is within memory_margin_bytes of its limit."""
        return (isinstance(used, int) and not isinstance(used, bool)
                and used >= self.memory_bytes - self.memory_margin_bytes)
