//! `cgctl events`: stream a cgroup's state changes, one line per event.

use cgctl::cli::EventsArgs;
use cgroupkit::events::Event;
use cgroupkit::{Cgroup, CgroupPath, Hierarchy};
use serde::Serialize;

use crate::cmd::{Failure, Result};
use crate::show::{json_shown, shown};

#[derive(Serialize)]
struct Line<'a> {
    cgroup: &'a str,
    event: &'a Event,
}

/// `cgctl events`.
pub fn events(a: EventsArgs) -> Result<()> {
    let h = Hierarchy::detect()?;
    let path = CgroupPath::new(&a.cgroup)?;
    let cg = Cgroup::load(&h, &path)?;
    let name = path.to_string();
    for (i, ev) in cg.watch()?.enumerate() {
        let ev = ev?;
        if a.json {
            let line = serde_json::to_string(&Line {
                cgroup: &name,
                event: &ev,
            })
            .map_err(|e| {
                Failure::new(format!("cannot encode JSON: {e}"), "report this as a bug")
            })?;
            println!("{}", json_shown(line));
        } else {
            println!("{}  {}", shown(&name), describe(&ev));
        }
        if a.count.is_some_and(|n| i as u64 + 1 >= n) {
            break;
        }
    }
    Ok(())
}

fn describe(ev: &Event) -> String {
    match ev {
        Event::Populated(p) => format!("populated {}", u8::from(*p)),
        Event::Frozen(f) => format!("frozen {}", u8::from(*f)),
        Event::Memory { kind, count } => format!("memory {kind:?} {count}").to_lowercase(),
        Event::PidsMax { count } => format!("pids max {count} (a fork was refused)"),
        Event::Removed => "removed".to_owned(),
        other => format!("{other:?}"),
    }
}
