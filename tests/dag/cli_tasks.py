"""Tasks the CLI tests run by module path (``tests.dag.cli_tasks:Hello``)."""

import os

import backbeat.dag as dag


class Hello(dag.Task):
    name = dag.Parameter()
    times = dag.IntParameter(default=1)
    shout = dag.BoolParameter()
    folder = dag.Parameter(default="")

    def output(self):
        folder = self.folder or os.environ["CLI_TASKS_DIR"]
        return dag.LocalTarget(os.path.join(folder, f"hello-{self.name}-{self.times}.txt"))

    def run(self):
        text = " ".join([f"hello {self.name}"] * self.times)
        with self.output().open("w") as f:
            f.write(text.upper() if self.shout else text)


class Fails(dag.Task):
    def requires(self):
        return Hello(name="dep")

    def run(self):
        raise RuntimeError("the warehouse is on fire")


class Quote(dag.Task):
    text = dag.Parameter()

    def run(self):
        pass
