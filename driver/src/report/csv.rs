//! `--format csv`: one row per (run, metric), the same metrics as every
//! other format. Long ("tidy") rows keep the columns fixed whatever the
//! workload: `run_id,workload,status,results_path,metric,unit,value,ratio_to_baseline`.
//! `ratio_to_baseline` is empty unless `--compare` was given.

use super::Report;
use crate::error::Error;

/// The header row.
pub const COLUMNS: [&str; 8] =
    ["run_id", "workload", "status", "results_path", "metric", "unit", "value", "ratio_to_baseline"];

pub fn render(report: &Report) -> Result<String, Error> {
    let err = |e: &dyn std::fmt::Display| Error::failed(format!("cannot write CSV: {e}"));
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS).map_err(|e| err(&e))?;
    for (i, run) in report.runs.iter().enumerate() {
        let r = &run.result;
        let path = run.path.display().to_string();
        for m in &run.metrics {
            let ratio = report
                .comparison
                .as_ref()
                .and_then(|c| c.rows.iter().find(|row| row.key == m.key))
                .and_then(|row| row.ratios.get(i).copied().flatten())
                .map(|x| x.to_string())
                .unwrap_or_default();
            let value = m.value.to_string();
            w.write_record([&r.run_id, &r.workload, r.status.as_str(), &path, &m.key, &m.unit, &value, &ratio])
                .map_err(|e| err(&e))?;
        }
    }
    let bytes = w.into_inner().map_err(|e| err(&e))?;
    String::from_utf8(bytes).map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::testutil::sample_result;

    #[test]
    fn csv_parses_back_with_every_metric() {
        let a = sample_result();
        let mut b = sample_result();
        b.run_id = "b,with \"quotes\"".into();
        b.summary["read"]["iops"] = 209_715.2.into();
        let report = Report::new(vec![("a.json".into(), a), ("b.json".into(), b)], true);
        let text = render(&report).expect("csv");
        let mut rd = ::csv::Reader::from_reader(text.as_bytes());
        assert_eq!(rd.headers().expect("headers").iter().collect::<Vec<_>>(), COLUMNS);
        let rows: Vec<::csv::StringRecord> = rd.records().collect::<Result<_, _>>().expect("records");
        let per_run = report.runs[0].metrics.len();
        assert_eq!(rows.len(), 2 * per_run);
        let iops_b = rows.iter().find(|r| &r[0] == "b,with \"quotes\"" && &r[4] == "read.iops").expect("row");
        assert_eq!(iops_b[6].parse::<f64>().expect("value"), 209_715.2);
        assert_eq!(iops_b[7].parse::<f64>().expect("ratio"), 2.0);
        assert_eq!(&iops_b[5], "ops/s");
        // Every value parses back to the metric it came from.
        for (row, m) in rows.iter().zip(&report.runs[0].metrics) {
            assert_eq!((&row[4], row[6].parse::<f64>().expect("f64")), (m.key.as_str(), m.value));
        }
        let alone = Report::new(vec![("a.json".into(), sample_result())], false);
        let text = render(&alone).expect("csv");
        assert!(text.lines().skip(1).all(|l| l.ends_with(',')), "no ratios without --compare:\n{text}");
    }
}
