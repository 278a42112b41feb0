"""File I/O below every other layer: checkpoints (`checkpoint`: safetensors + a hashed JSON
record, atomic writes), a training run's folder (`run_folder`: its files, the writer's lock, the
metrics log) and a study's folder (`study_files`: the typed plan in compare.json and where every
file of a `compare` run lives). Imports nothing of attnlab but `attnlab.checks`."""
