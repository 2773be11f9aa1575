use std::process::ExitCode;

use tasksync::{
    config::{Environment, Settings},
    startup::Application,
    telemetry,
};

#[actix_web::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One clear line, not a backtrace: the chain of causes, outermost first.
            let causes: Vec<String> = err.chain().map(ToString::to_string).collect();
            eprintln!("tasksync: {}", causes.join(": "));
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let environment = Environment::from_env()?;
    let settings = Settings::load(environment)?;
    telemetry::init(&settings.log_level, settings.log_format);
    let app = Application::build(&settings).await?;
    tracing::info!(
        environment = environment.name(),
        "tasksync listening on http://{}:{}",
        settings.host,
        app.port()
    );
    app.run_until_stopped().await?;
    Ok(())
}
