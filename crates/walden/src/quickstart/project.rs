//! The repository's example models (`models/`, `walden_project.yml`), built into the binary
//! so `walden quickstart` works from anywhere. A test checks the list matches the folder.

/// (path relative to the project root, contents).
pub const FILES: &[(&str, &str)] = &[
    (
        "models/README.md",
        include_str!("../../../../models/README.md"),
    ),
    (
        "models/marts/_marts.yml",
        include_str!("../../../../models/marts/_marts.yml"),
    ),
    (
        "models/marts/dim_customers.sql",
        include_str!("../../../../models/marts/dim_customers.sql"),
    ),
    (
        "models/marts/dim_date.sql",
        include_str!("../../../../models/marts/dim_date.sql"),
    ),
    (
        "models/marts/dim_products.sql",
        include_str!("../../../../models/marts/dim_products.sql"),
    ),
    (
        "models/marts/fct_order_lines.sql",
        include_str!("../../../../models/marts/fct_order_lines.sql"),
    ),
    (
        "models/marts/fct_orders.sql",
        include_str!("../../../../models/marts/fct_orders.sql"),
    ),
    (
        "models/staging/_sources.yml",
        include_str!("../../../../models/staging/_sources.yml"),
    ),
    (
        "models/staging/_staging.yml",
        include_str!("../../../../models/staging/_staging.yml"),
    ),
    (
        "models/staging/stg_addresses.sql",
        include_str!("../../../../models/staging/stg_addresses.sql"),
    ),
    (
        "models/staging/stg_customers.sql",
        include_str!("../../../../models/staging/stg_customers.sql"),
    ),
    (
        "models/staging/stg_order_lines.sql",
        include_str!("../../../../models/staging/stg_order_lines.sql"),
    ),
    (
        "models/staging/stg_orders.sql",
        include_str!("../../../../models/staging/stg_orders.sql"),
    ),
    (
        "models/staging/stg_payments.sql",
        include_str!("../../../../models/staging/stg_payments.sql"),
    ),
    (
        "models/staging/stg_products.sql",
        include_str!("../../../../models/staging/stg_products.sql"),
    ),
    (
        "models/tests/assert_order_totals_not_negative.sql",
        include_str!("../../../../models/tests/assert_order_totals_not_negative.sql"),
    ),
    (
        "walden_project.yml",
        include_str!("../../../../walden_project.yml"),
    ),
];

/// Writes the project into `root`.
pub fn write(root: &std::path::Path) -> std::io::Result<()> {
    for (path, text) in FILES {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every file of the repository's example project is embedded, and nothing else.
    #[test]
    fn the_embedded_project_is_the_repository_folder() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut on_disk = vec!["walden_project.yml".to_string()];
        let mut stack = vec![root.join("models")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    on_disk.push(
                        path.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .replace('\\', "/"),
                    );
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = super::FILES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "update crates/walden/src/quickstart/project.rs"
        );
    }
}
