"""Per-step training times of `cpu-budget` runs, beside what their speed probe planned from.

    python benchmarks/step_times.py BUDGET_S MODEL [MODEL ...]

Trains each model for BUDGET_S seconds (final evaluation on 500 test images, no corruptions) into a temporary folder
and prints the probe's steps and planned step time, the share of the budget used, the first eight step times and
the mean step time after the probe. The data come from `CIFAR_STUDY_DATA` (or the default data folder)."""
import statistics, sys, tempfile, time
from fastai.callback.core import Callback
from cifar_study.training import train_model

class StepTimes(Callback):
    "Seconds of each training step, data loading included (what the budget counts)."
    order = 99
    def before_fit(self): self.times = []
    def before_train(self): self.start = time.perf_counter()
    def after_batch(self):
        if not self.training: return
        now = time.perf_counter()
        self.times.append(now - self.start)
        self.start = now

def main(budget_s: float, models: list[str]):
    with tempfile.TemporaryDirectory() as out:
        for name in models:
            timer = StepTimes()
            record = train_model(name, profile='cpu-budget', budget_s=budget_s, force=True, test_limit=500,
                                 epoch_test_images=None, corruption_images=0, out=out, cbs=[timer])
            times, budget = timer.times, record.budget
            planned = record.config['batch_size'] / budget['probe_train_images_per_second']
            after_probe = statistics.mean(times[budget['probe_steps']:]) if len(times) > budget['probe_steps'] else float('nan')
            print(f"{name:24} probe {budget['probe_steps']} steps {budget['probe_seconds']:.1f} s, planned step {planned:.2f} s, "
                  f"after the probe {after_probe:.2f} s, {len(times)} steps, {budget['share_used']:.1%} of the budget; "
                  f"first steps {' '.join(f'{t:.2f}' for t in times[:8])}", flush=True)

if __name__ == '__main__': main(float(sys.argv[1]), sys.argv[2:])
