"""The root of the ``andon`` command: the Typer app every command module adds itself to.

Nothing heavy is imported here or in any command module at import time, so ``andon --help``
answers instantly; each command imports what it needs when it runs."""

from __future__ import annotations

import typer

EXAMPLES = """\
[bold]Examples[/bold] (every command also has its own --help)

  start Prefect + MLflow (embedded):  andon up
  services, PIDs and URLs:            andon status
  stop what `up` started:             andon down
  a plant's merged config:            andon config show plant-b
  validate every plant config:        andon config validate
  synthetic parts as raw batches:     andon synth --plant plant-a --parts 2000
  ... with a lighting + focus drift:  andon synth --plant plant-b --brightness 0.7 --blur 1.5
  upload a labelled image folder:     andon ingest --plant plant-a ../shared/data/casting/test --limit 200
  ... sorted by class, defect-rich:   andon ingest --plant plant-x ./labelled --mixed --curated
  list objects under a prefix:        andon store ls plant-a/line-1/raw/
  validate a raw batch (the gate):    andon validate --plant plant-b plant-b/line-1/raw/2026-11-26/B
  learn bounds from a good batch:     andon validate learn --plant plant-b --reference PREFIX
  check a CSV against a table spec:   andon validate table ai4i2020 ai4i2020.csv
  dataset versions of a plant:        andon datasets list --plant plant-b
  what changed between two versions:  andon datasets diff --plant plant-b 2e0abe65 9c41d7aa
  train a challenger on a dataset:    andon train --plant plant-b --dataset 2e0abe65
  a good model for a new plant:       andon tune --plant plant-x --dataset 2e0abe65 --budget 20m --register
  the sensor (machine-failure) model: andon train-sensor --plant plant-a ai4i2020.csv --hold-out TWF
  challenger vs champion, the gate:   andon promote --plant plant-b
  put the previous champion back:     andon rollback plant-b.surface-defects --reason "false rejects"
  versions, one version, two:         andon models list plant-b.surface-defects | show M 3 | diff M 2 3
  score a batch with the champion:    andon score --plant plant-b plant-b/line-1/raw/2026-11-26/B
  score sensor readings (with SHAP):  andon score-sensor --plant plant-a ai4i2020.csv
  online scoring service:             andon serve --plant plant-a --port 8000
  the MES gateway (webhooks + MQTT):  andon gateway --mqtt mqtt://127.0.0.1:1883   (ANDON_MES_SECRET set)
  send a signed MES event (testing):  andon mes send sku.introduced --plant plant-a --sku S9
  why was part X rejected?            andon explain --plant plant-a PART_ID
  the floor's web page (review, alerts): andon ui   (accounts: andon users add j.doe --plants plant-a)
  audit report of a window (HTML+CSV): andon audit --plant plant-a --from T1 --to T2 --only-defects
  monitor drift over the last hour:   andon monitor --plant plant-a --window 1h --drift-report
  open alerts / take one:             andon alerts list --plant plant-a | andon alerts ack ID --plant plant-a --who me
  queue informative parts to label:   andon label queue --plant plant-a --window 1h
  label them in the terminal:         andon label review --plant plant-a --reviewer me
  Label Studio round trip:            andon label export --plant plant-a tasks.json | andon label import ...
  the plants' Prefect deployments:    andon deployments render  |  andon deploy
  a worker for a plant's flow runs:   andon worker --plant plant-b
  the center's policy on all plants:  andon governance check
  central baseline, plant fine-tune:  andon governance central --dataset plant-b:ID | governance fine-tune ...
  the cross-plant report (HTML):      andon governance report
  the main job, end to end:           andon demo
"""

app = typer.Typer(
    name="andon",
    help="Andon keeps factory AI alive after launch day.\n\n" + EXAMPLES,
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # andon --install-completion (bash, zsh, fish, PowerShell)
)
