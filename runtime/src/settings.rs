//! Loading the configuration file and the secrets it points to.

use std::path::Path;

use storefront_core::config::{Config, ConfigError, CredentialsSection, Problem};

/// A pool's backend credentials: access key and secret key.
pub type KeyPair = (String, String);

/// Read, parse and validate a configuration file, then resolve every pool's credentials.
/// Every error names the file and the key.
pub fn load(path: &Path) -> Result<(Config, Vec<Option<KeyPair>>), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        file: file.clone(),
        problems: vec![Problem {
            key: String::new(),
            message: format!("cannot read the file: {error}"),
        }],
    })?;
    let config = Config::from_toml(&text, &file)?;
    let credentials = resolve_credentials(&config, &file)?;
    Ok((config, credentials))
}

/// Resolve each pool's credentials from inline values, files or environment variables.
pub fn resolve_credentials(config: &Config, file: &str) -> Result<Vec<Option<KeyPair>>, ConfigError> {
    let mut problems = Vec::new();
    let mut resolved = Vec::with_capacity(config.pools.len());
    for (index, pool) in config.pools.iter().enumerate() {
        let Some(credentials) = &pool.credentials else {
            resolved.push(None);
            continue;
        };
        let key = format!("pools[{index}].credentials");
        let access = secret(credentials, Part::Access, &key, &mut problems);
        let secret_key = secret(credentials, Part::Secret, &key, &mut problems);
        resolved.push(access.zip(secret_key));
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(ConfigError {
            file: file.to_owned(),
            problems,
        })
    }
}

#[derive(Clone, Copy)]
enum Part {
    Access,
    Secret,
}

fn secret(section: &CredentialsSection, part: Part, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let (name, inline, file, env) = match part {
        Part::Access => (
            "access_key",
            &section.access_key,
            &section.access_key_file,
            &section.access_key_env,
        ),
        Part::Secret => (
            "secret_key",
            &section.secret_key,
            &section.secret_key_file,
            &section.secret_key_env,
        ),
    };
    let value = if let Some(value) = inline {
        Ok(value.clone())
    } else if let Some(path) = file {
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            .map_err(|error| format!("`{name}_file`: cannot read `{path}`: {error}"))
    } else if let Some(variable) = env {
        std::env::var(variable).map_err(|_| format!("`{name}_env`: environment variable `{variable}` is not set"))
    } else {
        Err(format!("no `{name}`, `{name}_file` or `{name}_env`"))
    };
    match value {
        Ok(value) if !value.is_empty() => Some(value),
        Ok(_) => {
            problems.push(Problem {
                key: key.to_owned(),
                message: format!("`{name}` is empty"),
            });
            None
        }
        Err(message) => {
            problems.push(Problem {
                key: key.to_owned(),
                message,
            });
            None
        }
    }
}
