//! `drover`: the supervisor serving its built-in demo app.

fn main() -> std::process::ExitCode {
    drover::run(drover::demo::app)
}
