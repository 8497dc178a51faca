"""Test-size configs: the same names and keys as configs/, small sizes (README and demo tests)."""

TINY = {
    "pretrain-demo.yaml": """
name: pretrain-demo
storage_path: runs/pretrain
epochs: 1
batch_size: 8
num_workers: 2
max_failures: 0
model: {backbone: resnet18, output_stride: 16, hidden_dim: 32}
data: {shards: runs/demo/shards, image_size: 64, shuffle_buffer: 8}
loss: {queue_global: 16, queue_local: 64, max_patches: 4, min_patch_area: 0.25}
checkpoint: {every_steps: 2}
""",
    "probe-demo.yaml": """
train_shards: runs/demo/shards
val_shards: runs/demo/shards-val
input_size: 64
seeds: [0, 1]
linear: {epochs: 2}
purity: {per_class: 5}
out: runs/demo/probe
""",
    "sweep-demo.yaml": """
name: sweep-demo
storage_path: runs/sweeps
pretrain: configs/pretrain-demo.yaml
pretrain_overrides: [num_workers=1, batch_size=4, data.samples_per_epoch=8]
space: {tau: [0.2]}
objective:
  plugin: proto
  config:
    data: {shards: runs/demo/shards, benchmark: embedded, folds: [0]}
    image_size: 64
    device: cpu
    objective: {fold: 0, episodes: 4, shots: 1}
asha: {enabled: false}
resources: {workers_per_trial: 1, driver_cpus: 1, max_concurrent_trials: 1}
dashboard: false
""",
    "fewshot-demo.yaml": """
prior: runs/pretrain/pretrain-embedded/prior.pt
model: {backbone: resnet18, dilated: false, reduce_dim: 16, prior_conv_dim: 16}
data: {shards: runs/demo/shards, benchmark: embedded, folds: [0]}
image_size: 64
episodes_dir: runs/demo/fewshot/episodes
fit: {steps: 2, shots: [1], checkpoint_every: 2, storage_path: runs/demo/fewshot, name: fit, cache: {views: 1}}
eval: {shards: runs/demo/shards-val, episodes: 3, seeds: 2, shots: [1], n_figure_episodes: 1, bootstrap: 50, out_dir: runs/demo/fewshot/eval}
objective: {episodes: 3, shots: 1}
""",
}
