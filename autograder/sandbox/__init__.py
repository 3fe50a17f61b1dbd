"""Where student code runs: a worker process behind the trust boundary, and the grader's handle
on it. One module per idea:

    client.py       Worker, the grader's handle: start on demand, preflight, import, requests,
                    restarts
    budget.py       the time budget: the whole grading, the timeouts' allowance, each check
    wire.py         one framed request and reply under a deadline; a reply as Reply or an error
    validation.py   a decoded reply checked against its op's schema (worker/protocol.py), rebuilt
                    from fresh objects, or refused as malformed
    errors.py       StudentError, WorkerFailure, GraderError, WorkerStartError
    process.py      one worker process: its sandbox folder, start, stop (every process of it
                    killed), why it ended, its output cut to a limit
    identity.py     the worker's uid and gid, drawn for each grading; its processes killed
                    and its files removed, no other grading's
    isolation.py    namespaces (bubblewrap, unshare), the worker's command line, its resource
                    limits
    cgroup.py       a cgroup of the worker's own where the grader can make one: memory (tmpfs
                    files included) and process limits
    filesystem.py   the worker's view of the filesystem under bubblewrap
    confinement.py  the worker's own confinement (worker/confine/): a file planted for its
                    preflight to read, and the grader's judgement of what held
    protections.py  the isolation active here, in words, for the report
    limits.py       Limits, rubric.WORKER as a record, memory sized to the container (memory.py)
    memory.py       the container's memory and the kernel's OOM kills, from its cgroup
"""
