"""The clap counter's row, so a clap is one UPDATE (no get-or-create race between workers)."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def create_counter(apps: Any, schema_editor: Any) -> None:
    apps.get_model("chat", "Counter").objects.get_or_create(name="claps")


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(create_counter, migrations.RunPython.noop)]
