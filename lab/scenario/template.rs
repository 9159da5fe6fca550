//! Topology templates: `scenarios/topologies/NAME.toml`, instantiated by a
//! scenario's `[template]` table. A template is data: the same `nodes` / `links`
//! / `host_sysctls` a scenario has, with `${param}` placeholders (`${i+1}`,
//! `${i*2}`, `${n-1}` also work) and `[[repeat]]` blocks instantiated once per
//! value `1..=count` of a counter. The result is merged under the scenario's own
//! topology: nodes merge field by field (lists append, maps override by key),
//! links append. Nothing downstream knows a template was used.

use super::error::{ScenarioError, SourceMap};
use super::schema::*;
use std::collections::BTreeMap;
use std::path::Path;
use toml::{Table, Value};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyPart {
    #[serde(default)]
    host_sysctls: SysctlMap,
    #[serde(default)]
    nodes: BTreeMap<SpannedStr, NodeSpec>,
    #[serde(default)]
    links: Vec<LinkSpec>,
}

/// Templates compiled into the binary (scenarios/topologies/), the last place looked.
const BUILTIN: [(&str, &str); 3] = [
    (
        "calico",
        include_str!("../../scenarios/topologies/calico.toml"),
    ),
    (
        "docker",
        include_str!("../../scenarios/topologies/docker.toml"),
    ),
    (
        "openstack-qbr",
        include_str!("../../scenarios/topologies/openstack-qbr.toml"),
    ),
];

static TEMPLATE_DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Directories searched after the scenario's own `topologies/` (`--templates DIR`).
pub fn set_template_dirs(dirs: Vec<std::path::PathBuf>) {
    *TEMPLATE_DIRS.lock().unwrap_or_else(|p| p.into_inner()) = dirs;
}

/// A template's file name and text: `DIR/topologies/NAME.toml` next to the scenario,
/// then each `--templates DIR` (`DIR/NAME.toml`), then the built-in ones. On failure,
/// the places looked.
fn find(name: &str, dir: &Path) -> Result<(String, String), Vec<String>> {
    let mut candidates = vec![dir.join("topologies").join(format!("{name}.toml"))];
    for d in TEMPLATE_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        candidates.push(d.join(format!("{name}.toml")));
    }
    let mut looked = Vec::new();
    for c in candidates {
        match std::fs::read_to_string(&c) {
            Ok(text) => return Ok((c.display().to_string(), text)),
            Err(_) => looked.push(c.display().to_string()),
        }
    }
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => Ok((format!("built-in topologies/{n}.toml"), text.to_string())),
        None => {
            looked.push("the built-in templates".into());
            Err(looked)
        }
    }
}

/// Expand `file.template` (if any) and merge it in.
pub fn apply(file: &mut ScenarioFile, src: &SourceMap, dir: &Path) -> Result<(), ScenarioError> {
    let Some(tu) = file.template.take() else {
        return Ok(());
    };
    let name = tu.name.get_ref();
    let (tfile, text) = find(name, dir).map_err(|looked| {
        src.error(
            tu.name.span(),
            "template.name",
            format!("no template `{name}`: looked in {}", looked.join(", ")),
            format!(
                "use one of the built-in templates ({}) or put {name}.toml in a topologies/ directory next to the scenario, or pass --templates DIR",
                BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let tsrc = SourceMap::new(&tfile, &text);
    let mut table: Table = toml::from_str(&text).map_err(|e| {
        let (line, column) = tsrc.line_col(e.span().map(|s| s.start).unwrap_or(0));
        ScenarioError {
            file: tfile.clone(),
            line,
            column,
            field: "-".into(),
            message: e.message().to_string(),
            fix: "fix the template".into(),
        }
    })?;
    let params = params(&mut table, &tu, src, &tfile)?;
    let expanded = expand(table, &params).map_err(|m| ScenarioError {
        file: tfile.clone(),
        line: 0,
        column: 0,
        field: "-".into(),
        message: m,
        fix: "every ${...} must name a parameter of the template or a repeat counter".into(),
    })?;
    let expanded_text = toml::to_string(&expanded).expect("tables serialize");
    let esrc = SourceMap::new(&format!("{tfile} (expanded)"), &expanded_text);
    let part: TopologyPart = toml::from_str(&expanded_text).map_err(|e| {
        let (line, column) = esrc.line_col(e.span().map(|s| s.start).unwrap_or(0));
        ScenarioError {
            file: esrc.file.clone(),
            line,
            column,
            field: "-".into(),
            message: e.message().to_string(),
            fix: "the template's nodes and links follow the scenario schema".into(),
        }
    })?;
    merge(file, part);
    Ok(())
}

/// The template's `[params]` defaults overridden by the scenario's values.
fn params(
    table: &mut Table,
    tu: &TemplateUse,
    src: &SourceMap,
    tfile: &str,
) -> Result<BTreeMap<String, Value>, ScenarioError> {
    let defaults = match table.remove("params") {
        Some(Value::Table(t)) => t,
        None => Table::new(),
        Some(_) => {
            return Err(ScenarioError {
                file: tfile.into(),
                line: 1,
                column: 1,
                field: "params".into(),
                message: "params must be a table".into(),
                fix: "write [params] with default values".into(),
            })
        }
    };
    table.remove("name");
    table.remove("about");
    let mut out: BTreeMap<String, Value> = defaults.into_iter().collect();
    for (k, v) in &tu.params {
        match out.get(k.get_ref()) {
            Some(d) if d.type_str() == v.get_ref().type_str() => {
                out.insert(k.get_ref().clone(), v.get_ref().clone());
            }
            Some(d) => {
                return Err(src.error(
                    v.span(),
                    format!("template.params.{}", k.get_ref()),
                    format!(
                        "expected {}, found {}",
                        d.type_str(),
                        v.get_ref().type_str()
                    ),
                    format!("the template's default is {d}"),
                ))
            }
            None => {
                let known: Vec<&String> = out.keys().collect();
                return Err(src.error(
                    k.span(),
                    format!("template.params.{}", k.get_ref()),
                    format!("the template has no parameter `{}`", k.get_ref()),
                    format!("use one of: {known:?}"),
                ));
            }
        }
    }
    Ok(out)
}

fn expand(mut table: Table, params: &BTreeMap<String, Value>) -> Result<Table, String> {
    let repeats = match table.remove("repeat") {
        Some(Value::Array(a)) => a,
        None => vec![],
        Some(_) => return Err("`repeat` must be an array of tables ([[repeat]])".into()),
    };
    let mut out = match substitute(Value::Table(table), params)? {
        Value::Table(t) => t,
        _ => unreachable!(),
    };
    for r in repeats {
        let Value::Table(mut r) = r else {
            return Err("each [[repeat]] must be a table".into());
        };
        let var = match r.remove("var") {
            Some(Value::String(s)) => s,
            _ => return Err("[[repeat]] needs var = \"NAME\"".into()),
        };
        let count = match r.remove("count") {
            Some(Value::Integer(n)) => n,
            Some(Value::String(p)) => match params.get(&p) {
                Some(Value::Integer(n)) => *n,
                _ => {
                    return Err(format!(
                        "[[repeat]] count `{p}` is not an integer parameter"
                    ))
                }
            },
            _ => return Err("[[repeat]] needs count = N or count = \"PARAM\"".into()),
        };
        for i in 1..=count {
            let mut scope = params.clone();
            scope.insert(var.clone(), Value::Integer(i));
            if let Value::Table(t) = substitute(Value::Table(r.clone()), &scope)? {
                deep_merge(&mut out, t);
            }
        }
    }
    Ok(out)
}

pub(crate) fn substitute(v: Value, params: &BTreeMap<String, Value>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => {
            let text = fill(&s, params)?;
            // A string that is exactly one placeholder takes the parameter's type.
            match (
                s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1,
                text.parse::<i64>(),
            ) {
                (true, Ok(n)) => Value::Integer(n),
                _ => Value::String(text),
            }
        }
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|x| substitute(x, params))
                .collect::<Result<_, _>>()?,
        ),
        Value::Table(t) => {
            let mut out = Table::new();
            for (k, v) in t {
                out.insert(fill(&k, params)?, substitute(v, params)?);
            }
            Value::Table(out)
        }
        other => other,
    })
}

/// Replace `${name}`, `${name+K}`, `${name-K}`, `${name*K}` in a string.
pub fn fill(s: &str, params: &BTreeMap<String, Value>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
        out.push_str(&eval_placeholder(&after[..end], params)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn eval_placeholder(expr: &str, params: &BTreeMap<String, Value>) -> Result<String, String> {
    let expr = expr.trim();
    if let Some(Value::String(s)) = params.get(expr) {
        return Ok(s.clone());
    }
    let mut p = Arith {
        s: expr.as_bytes(),
        i: 0,
        params,
    };
    let v = p.sum()?;
    if p.i != p.s.len() {
        return Err(format!("`${{{expr}}}`: unexpected `{}`", &expr[p.i..]));
    }
    Ok(if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    })
}

/// `+ - * /` and parentheses over numbers and numeric parameters.
struct Arith<'a> {
    s: &'a [u8],
    i: usize,
    params: &'a BTreeMap<String, Value>,
}

impl Arith<'_> {
    fn skip(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn sum(&mut self) -> Result<f64, String> {
        let mut v = self.product()?;
        loop {
            self.skip();
            match self.s.get(self.i) {
                Some(b'+') => {
                    self.i += 1;
                    v += self.product()?;
                }
                Some(b'-') => {
                    self.i += 1;
                    v -= self.product()?;
                }
                _ => return Ok(v),
            }
        }
    }
    fn product(&mut self) -> Result<f64, String> {
        let mut v = self.atom()?;
        loop {
            self.skip();
            match self.s.get(self.i) {
                Some(b'*') => {
                    self.i += 1;
                    v *= self.atom()?;
                }
                Some(b'/') => {
                    self.i += 1;
                    v /= self.atom()?;
                }
                _ => return Ok(v),
            }
        }
    }
    fn atom(&mut self) -> Result<f64, String> {
        self.skip();
        let start = self.i;
        if self.s.get(self.i) == Some(&b'(') {
            self.i += 1;
            let v = self.sum()?;
            self.skip();
            if self.s.get(self.i) != Some(&b')') {
                return Err("missing `)`".into());
            }
            self.i += 1;
            return Ok(v);
        }
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
        {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        if word.is_empty() {
            return Err("expected a number or a parameter".into());
        }
        if let Ok(n) = word.parse::<f64>() {
            return Ok(n);
        }
        match self.params.get(word) {
            Some(Value::Integer(n)) => Ok(*n as f64),
            Some(Value::Float(f)) => Ok(*f),
            Some(other) => Err(format!(
                "parameter `{word}` is {}, not a number",
                other.type_str()
            )),
            None => Err(format!("no parameter `{word}`")),
        }
    }
}

/// Tables merge recursively, arrays append, anything else is replaced.
fn deep_merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => deep_merge(a, b),
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// The template goes under the scenario: the scenario's own nodes merge into
/// the template's, its links come after the template's.
fn merge(file: &mut ScenarioFile, part: TopologyPart) {
    let own_nodes = std::mem::take(&mut file.nodes);
    file.nodes = part.nodes;
    for (name, spec) in own_nodes {
        match file.nodes.remove(&name) {
            Some(mut base) => {
                merge_node(&mut base, spec);
                file.nodes.insert(name, base);
            }
            None => {
                file.nodes.insert(name, spec);
            }
        }
    }
    let own_links = std::mem::take(&mut file.links);
    file.links = part.links;
    file.links.extend(own_links);
    for (k, v) in part.host_sysctls {
        file.host_sysctls.entry(k).or_insert(v);
    }
}

fn merge_node(base: &mut NodeSpec, own: NodeSpec) {
    if own.about.is_some() {
        base.about = own.about;
    }
    base.sysctls.extend(own.sysctls);
    for (name, dev) in own.devices {
        match base.devices.get_mut(&name) {
            Some(d) => {
                d.ports.extend(dev.ports);
                d.addresses.extend(dev.addresses);
            }
            None => {
                base.devices.insert(name, dev);
            }
        }
    }
    for (dev, addrs) in own.addresses {
        base.addresses.entry(dev).or_default().extend(addrs);
    }
    base.routes.extend(own.routes);
    base.ip_rules.extend(own.ip_rules);
    base.neighbours.extend(own.neighbours);
    base.rulesets.extend(own.rulesets);
    base.extra_rulesets.extend(own.extra_rulesets);
    base.commands.extend(own.commands);
    base.processes.extend(own.processes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let mut p = BTreeMap::new();
        p.insert("i".to_string(), Value::Integer(3));
        p.insert("net".to_string(), Value::String("172.17".into()));
        assert_eq!(fill("c${i}", &p).unwrap(), "c3");
        assert_eq!(fill("${net}.0.${i+1}/16", &p).unwrap(), "172.17.0.4/16");
        assert_eq!(fill("x${i*2}-${i-1}", &p).unwrap(), "x6-2");
        assert_eq!(fill("${1/(i+1)}", &p).unwrap(), "0.25");
        assert_eq!(fill("${(i - 1) * 2 + 1}", &p).unwrap(), "5");
        assert!(fill("${nope}", &p).is_err());
        assert!(fill("${i", &p).is_err());
        // nft's own braces and $variables pass through untouched.
        assert_eq!(
            fill("chain x { ip saddr $lan }", &p).unwrap(),
            "chain x { ip saddr $lan }"
        );
    }

    #[test]
    fn repeat_blocks_append_and_merge() {
        let t: Table = toml::from_str(
            r#"
            [nodes.host.devices.br0]
            kind = "bridge"
            [[repeat]]
            var = "i"
            count = "n"
            [repeat.nodes."c${i}"]
            routes = ["default via 10.0.0.254"]
            [repeat.nodes.host.devices.br0]
            ports = ["veth${i}"]
            [[repeat.links]]
            a = "c${i}:eth0 10.0.0.${i}/24"
            b = "host:veth${i}"
            "#,
        )
        .unwrap();
        let mut p = BTreeMap::new();
        p.insert("n".to_string(), Value::Integer(2));
        let out = expand(t, &p).unwrap();
        let ports = &out["nodes"]["host"]["devices"]["br0"]["ports"];
        assert_eq!(ports.as_array().unwrap().len(), 2);
        assert!(out["nodes"].get("c2").is_some());
        assert_eq!(out["links"].as_array().unwrap().len(), 2);
        assert_eq!(out["links"][1]["a"].as_str(), Some("c2:eth0 10.0.0.2/24"));
    }
}
