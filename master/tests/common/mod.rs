//! Shared set-up for the master's tests: databases (a temporary SQLite file, or a fresh schema on
//! the real PostgreSQL), recipes, raw results.
#![allow(dead_code)]

use pyti_master::recipes::RecipeCatalog;
use pyti_master::store::{Store, StoreOptions};
use pyti_master::Clock;
use pyti_wire::job::{JobSpec, PackageSpec};
use pyti_wire::raw_data::{CapturedOutput, RawResult, StepOutcome, StepRawData, RAW_RESULT_SCHEMA};
use pyti_wire::recipe::Recipe;
use std::path::Path;
use std::sync::Arc;

/// The PostgreSQL the tests use (CI starts one); override with `PYTI_TEST_POSTGRES_URL`.
pub fn postgres_url() -> String {
    std::env::var("PYTI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://pyti:pyti@127.0.0.1:5432/pyti_test".to_string())
}

/// A database for one test.
pub struct TestDb {
    pub url: String,
    dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestDb {
    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = dir.path().join("master.sqlite").display().to_string();
        TestDb {
            url,
            dir: Some(dir),
            schema: None,
        }
    }

    /// A fresh schema on the real PostgreSQL, selected through the connection's search_path.
    pub async fn postgres() -> TestDb {
        let base = postgres_url();
        let schema = format!("pyti_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let pool = sqlx::PgPool::connect(&base)
            .await
            .expect("PostgreSQL for tests (see scripts/setup-host.sh --tests)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .expect("create schema");
        pool.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        TestDb {
            url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
            dir: None,
            schema: Some(schema),
        }
    }

    /// A store on this database.
    pub async fn store(&self, clock: &Clock, max_attempts: u32) -> Store {
        Store::open(&self.url, options(clock, max_attempts))
            .await
            .expect("open store")
    }

    /// Runs `sql` on this database directly (to build the state of an older schema).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        if self.schema.is_some() {
            let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
            sqlx::raw_sql(sql).execute(&pool).await.expect("raw SQL");
            pool.close().await;
        } else {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.url))
                .await
                .expect("connect");
            sqlx::raw_sql(sql).execute(&pool).await.expect("raw SQL");
            pool.close().await;
        }
    }

    /// The single integer `sql` reads from this database directly (what the store wrote).
    pub async fn count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        if self.schema.is_some() {
            let pool = sqlx::PgPool::connect(&self.url).await.expect("connect");
            let n = sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await
                .expect("count");
            pool.close().await;
            n
        } else {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.url))
                .await
                .expect("connect");
            let n = sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await
                .expect("count");
            pool.close().await;
            n
        }
    }

    /// Drops the PostgreSQL schema (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        if let Some(schema) = &self.schema {
            if let Ok(pool) = sqlx::PgPool::connect(&postgres_url()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }
        drop(self.dir);
    }
}

/// Lease of 60 s, the given attempts, test recipes.
pub fn options(clock: &Clock, max_attempts: u32) -> StoreOptions {
    StoreOptions {
        lease_secs: 60,
        max_attempts,
        connections: 8,
        clock: clock.clone(),
        recipes: recipes(),
    }
}

/// The shipped `debian-12` recipe, and a copy called `other-distro`.
pub fn recipes() -> Arc<RecipeCatalog> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
    let debian = Recipe::load(&path).expect("shipped recipe");
    let mut other = debian.clone();
    other.name = "other-distro".into();
    Arc::new(RecipeCatalog::from_recipes([debian, other]))
}

/// A job for `name==version` on `recipes`.
pub fn job(name_version: &str, recipes: &[&str], priority: u8) -> JobSpec {
    JobSpec {
        package: PackageSpec::pypi(name_version).expect("name==version"),
        recipes: recipes.iter().map(|r| r.to_string()).collect(),
        submitter: None,
        priority,
        trigger: "test".into(),
    }
}

/// Raw data for `task_id` where the recipe's steps end with `outcomes` (in order).
pub fn raw(task_id: i64, recipe: &Recipe, outcomes: &[StepOutcome]) -> RawResult {
    RawResult {
        schema: RAW_RESULT_SCHEMA,
        task_id: task_id.to_string(),
        agent_version: "test".into(),
        guest_kernel: "6.1".into(),
        interpreter_version: "Python 3.11.2".into(),
        uptime_start_secs: 1.0,
        uptime_end_secs: 3.0,
        steps: recipe
            .steps
            .iter()
            .zip(outcomes)
            .map(|(step, outcome)| StepRawData {
                name: step.name.clone(),
                command: step.run.clone(),
                outcome: outcome.clone(),
                wall_secs: 0.5,
                user_cpu_secs: 0.1,
                system_cpu_secs: 0.1,
                max_rss_kib: 10_000,
                stdout: CapturedOutput {
                    head: "ok\n".into(),
                    tail: String::new(),
                    total_bytes: 3,
                    dropped_bytes: 0,
                },
                stderr: CapturedOutput::default(),
            })
            .collect(),
    }
}

/// Every step exiting 0.
pub fn passing(task_id: i64, recipe: &Recipe) -> RawResult {
    raw(
        task_id,
        recipe,
        &vec![StepOutcome::Exited { code: 0 }; recipe.steps.len()],
    )
}

/// The first step exiting 1, the rest skipped.
pub fn failing(task_id: i64, recipe: &Recipe) -> RawResult {
    let mut outcomes = vec![StepOutcome::Skipped; recipe.steps.len()];
    outcomes[0] = StepOutcome::Exited { code: 1 };
    raw(task_id, recipe, &outcomes)
}

/// Runs each scenario `async fn(TestDb)` once on SQLite (`sqlite::NAME`) and once on the real
/// PostgreSQL (`real_postgres::NAME`).
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite();
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod real_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}
