"""A task module written for Luigi (its names and idioms only). The compatibility test runs it
with real Luigi and, after changing the import to ``import backbeat.dag as luigi``, with Backbeat."""

import json
import os

import luigi

ROOT = os.environ.get("WORDCOUNT_ROOT", "/tmp/wordcount")


class InputText(luigi.ExternalTask):
    date = luigi.DateParameter()

    def output(self):
        return luigi.LocalTarget(os.path.join(ROOT, "input", f"{self.date:%Y-%m-%d}.txt"))


class WordCount(luigi.Task):
    date = luigi.DateParameter()
    min_length = luigi.IntParameter(default=1)

    def requires(self):
        return {"text": InputText(self.date)}

    def output(self):
        return luigi.LocalTarget(os.path.join(ROOT, "counts", f"{self.date}-{self.min_length}.json"))

    def run(self):
        counts = {}
        with self.input()["text"].open("r") as f:
            for word in f.read().split():
                if len(word) >= self.min_length:
                    counts[word] = counts.get(word, 0) + 1
        with self.output().open("w") as out:
            json.dump(counts, out, sort_keys=True)


class HourStamp(luigi.Task):
    hour = luigi.DateHourParameter()

    def output(self):
        return luigi.LocalTarget(
            os.path.join(ROOT, "hours", self.hour.strftime("%Y%m%d%H")), format=luigi.format.Nop
        )

    def run(self):
        with self.output().open("w") as out:
            out.write(self.hour.strftime("%H").encode())


class Report(luigi.Task):
    dates = luigi.ListParameter()
    min_length = luigi.IntParameter(default=2)

    def requires(self):
        return [
            WordCount(date=luigi.DateParameter().parse(d), min_length=self.min_length) for d in self.dates
        ]

    def output(self):
        return luigi.LocalTarget(os.path.join(ROOT, "report.json"))

    def run(self):
        total = {}
        for target in self.input():
            with target.open("r") as f:
                for word, n in json.load(f).items():
                    total[word] = total.get(word, 0) + n
        stamps = yield [HourStamp(hour=luigi.DateHourParameter().parse(f"2026-01-01T0{h}")) for h in range(3)]
        hours = []
        for stamp in stamps:
            with stamp.open("r") as f:
                hours.append(f.read().decode())
        with self.output().open("w") as out:
            json.dump({"total": total, "hours": hours}, out, sort_keys=True)


class All(luigi.WrapperTask):
    def requires(self):
        return Report(dates=["2026-01-01", "2026-01-02"])
