//! `cutover switch-rule`: the nft switch's root side (`crate::switch_rule`), one JSON
//! document on stdout, errors on stderr with exit 1.

use std::process::ExitCode;

use crate::cli::{RuleColor, SwitchRuleAction, SwitchRuleArgs};
use crate::config::Color;
use crate::switch_rule::Action;

fn color(c: RuleColor) -> Color {
    match c {
        RuleColor::Blue => Color::Blue,
        RuleColor::Green => Color::Green,
    }
}

pub fn run(args: SwitchRuleArgs) -> anyhow::Result<ExitCode> {
    let (project, action) = match args.action {
        SwitchRuleAction::Read { project } => (project, Action::Read),
        SwitchRuleAction::Remove { project } => (project, Action::Remove),
        SwitchRuleAction::Set {
            project,
            primary,
            backup,
        } => (
            project,
            Action::Set {
                primary: color(primary),
                backup: color(backup),
            },
        ),
    };
    let reply = crate::switch_rule::serve(&project, action)?;
    let text = serde_json::to_string(&reply)?;
    writeln!(crate::report::stdout(), "{text}")?;
    Ok(ExitCode::SUCCESS)
}
