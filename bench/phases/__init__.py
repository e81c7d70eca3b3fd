"""The benchmark runner's phases, one module per pipeline stage (ours beside its raw baseline).

Each module runs as a child process (`python -m bench.phases.<module> SIDE WORK SIZE URI`,
see `bench.workspace.phase_main`), so it imports only what its stage needs.
"""
