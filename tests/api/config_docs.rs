//! The configuration reference in docs/operations.md is the one full table of settings: this
//! keeps it honest. Its keys must be exactly the keys the app accepts and the keys
//! config/default.toml lists (set, or commented out when they have no default), each env var
//! must be the one the loader really maps to the key, and the default and production columns
//! must be the values in config/default.toml and config/production.toml.

use std::collections::{BTreeMap, BTreeSet};

use figment::{
    Figment,
    providers::{Format as _, Toml},
    value::{Dict, Value},
};
use tasksync::config;

const OPERATIONS: &str = include_str!("../../docs/operations.md");
const DEFAULTS: &str = include_str!("../../config/default.toml");
const PRODUCTION: &str = include_str!("../../config/production.toml");

const HEADER: &str =
    "| key | env var | default | production value (config/production.toml) | meaning |";

/// One row of the reference table.
#[derive(Debug)]
struct Row {
    env_var: String,
    default: String,
    production: String,
}

/// The rows of the table under "## Configuration reference", by key.
fn reference_table() -> BTreeMap<String, Row> {
    let section = OPERATIONS
        .split("\n## Configuration reference\n")
        .nth(1)
        .expect("docs/operations.md has a \"## Configuration reference\" section");
    let section = section.split("\n## ").next().unwrap();
    let mut lines = section
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != HEADER);
    assert_eq!(
        lines.next(),
        Some(HEADER),
        "the configuration reference has a table with the columns {HEADER}"
    );
    lines.next().expect("the header's separator row");
    let mut rows = BTreeMap::new();
    for line in lines.take_while(|line| line.starts_with('|')) {
        // The meaning comes last, so it may contain anything.
        let cells: Vec<&str> = line[1..].splitn(5, '|').map(str::trim).collect();
        assert_eq!(cells.len(), 5, "a row with five cells: {line}");
        let key = code(cells[0], line).to_owned();
        let row = Row {
            env_var: code(cells[1], line).to_owned(),
            default: cells[2].to_owned(),
            production: cells[3].to_owned(),
        };
        assert!(
            !cells[4].trim_end_matches('|').trim().is_empty(),
            "{key} has no meaning"
        );
        assert!(rows.insert(key.clone(), row).is_none(), "{key} twice");
    }
    rows
}

/// The text inside a cell that is one code span.
fn code<'a>(cell: &'a str, line: &str) -> &'a str {
    cell.strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .filter(|c| !c.contains('`'))
        .unwrap_or_else(|| panic!("{cell:?} is not one `code` span in: {line}"))
}

/// A TOML file's keys and values, nested tables flattened to `section.key`.
fn flattened(toml: &str) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, dict: Dict, into: &mut BTreeMap<String, Value>) {
        for (key, value) in dict {
            let key = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Dict(_, nested) => walk(&key, nested, into),
                value => {
                    into.insert(key, value);
                }
            }
        }
    }
    let dict: Dict = Figment::from(Toml::string(toml))
        .extract()
        .expect("the file is TOML");
    let mut keys = BTreeMap::new();
    walk("", dict, &mut keys);
    keys
}

/// Keys a file mentions only in a commented-out example (`# key = ...`): keys with no default.
fn commented_out(toml: &str) -> BTreeSet<String> {
    toml.lines()
        .filter_map(|line| line.strip_prefix("# ")?.split_once(" = "))
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        })
        .map(str::to_owned)
        .collect()
}

/// A value as the table writes it: `unset`, or one code span holding a TOML value.
fn documented_value(cell: &str, key: &str, column: &str) -> Option<serde_json::Value> {
    if cell == "`unset`" || cell.starts_with("`unset`:") {
        return None;
    }
    let literal = code(cell, &format!("the {column} of {key}"));
    let parsed = Figment::from(Toml::string(&format!("value = {literal}")))
        .find_value("value")
        .unwrap_or_else(|e| panic!("the {column} of {key}, {literal}, is not a TOML value: {e}"));
    Some(json(&parsed))
}

fn json(value: &Value) -> serde_json::Value {
    serde_json::to_value(value).expect("a TOML value is JSON too")
}

fn same_keys(documented: &BTreeSet<String>, other: &BTreeSet<String>, what: &str) {
    let missing: Vec<_> = other.difference(documented).collect();
    let extra: Vec<_> = documented.difference(other).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the configuration reference in docs/operations.md and {what} differ: \
         not documented {missing:?}, documented but not there {extra:?}"
    );
}

#[test]
fn the_configuration_reference_lists_every_key_with_its_env_var_and_values() {
    let table = reference_table();
    let documented: BTreeSet<String> = table.keys().cloned().collect();

    let defaults = flattened(DEFAULTS);
    let unset = commented_out(DEFAULTS);
    let listed: BTreeSet<String> = defaults.keys().cloned().chain(unset.clone()).collect();
    same_keys(&documented, &listed, "config/default.toml");
    let accepted: BTreeSet<String> = config::KEYS.iter().map(|k| (*k).to_owned()).collect();
    same_keys(
        &documented,
        &accepted,
        "the keys the app accepts (config::KEYS)",
    );

    let production = flattened(PRODUCTION);
    for key in production.keys() {
        assert!(
            documented.contains(key),
            "config/production.toml sets {key}, which is not documented"
        );
    }

    for (key, row) in &table {
        assert_eq!(
            row.env_var,
            config::env_var(key),
            "{key}'s env var is the key in upper case"
        );
        assert_eq!(
            config::key_for_env_var(&row.env_var),
            Some(key.as_str()),
            "the loader maps {} to {key}",
            row.env_var
        );

        let default = defaults.get(key).map(json);
        assert_eq!(
            documented_value(&row.default, key, "default"),
            default,
            "{key}'s default in docs/operations.md ({}) and config/default.toml differ",
            row.default
        );
        if default.is_none() {
            assert!(
                unset.contains(key),
                "{key} has neither a default nor an example"
            );
        }

        let in_production = production.get(key).map(json).or(default);
        assert_eq!(
            documented_value(&row.production, key, "production value"),
            in_production,
            "{key}'s production value in docs/operations.md ({}) is not what \
             config/production.toml (or the default) makes it",
            row.production
        );
    }
}
