//! The guest SDK for distributary routing plugins.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`],
//! built with `cargo build --target wasm32-wasip2 --release`. The SDK hides the
//! packed (columnar) batch layout of the WIT contract (`wit/plugin.wit`) behind
//! [`Batch`], and builds the packed answer with [`Decisions`].
//!
//! ```ignore
//! use distributary_plugin_sdk::{export_plugin, Batch, Decisions, Init, Plugin};
//! struct Everything { outputs: u32 }
//! impl Plugin for Everything {
//!     fn init(init: Init) -> Result<Self, String> { Ok(Self { outputs: init.outputs.len() as u32 }) }
//!     fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
//!         for record in 0..batch.len() { for o in 0..self.outputs { out.deliver(record, o); } }
//!         Ok(())
//!     }
//! }
//! export_plugin!(Everything);
//! ```

/// The raw bindings generated from `wit/plugin.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "router",
        pub_export_macro: true,
        export_macro_name: "export_router",
        default_bindings_module: "distributary_plugin_sdk::bindings",
    });
}

mod batch;
mod decisions;
pub mod json;

pub use batch::{Batch, Record};
pub use bindings::distributary::plugin::log::Level;
pub use decisions::{Decisions, Rewrite};

/// What a plugin is given once, before any batch.
#[derive(Debug, Clone)]
pub struct Init {
    /// The pipeline's `plugin_config` as JSON text (`{}` when unset).
    pub config: String,
    /// The pipeline's output names; deliveries name an output by its index here.
    pub outputs: Vec<String>,
}

impl Init {
    /// The index of the output called `name`, if the pipeline has one.
    pub fn output_index(&self, name: &str) -> Option<u32> {
        self.outputs
            .iter()
            .position(|o| o == name)
            .map(|i| i as u32)
    }

    /// The index of the output called `name`, or an error naming the config
    /// key it came from and the outputs the pipeline has.
    pub fn output(&self, name: &str, key: &str) -> Result<u32, String> {
        self.output_index(name).ok_or_else(|| {
            format!(
                "plugin_config.{key}: output {name:?} is not one of the pipeline's outputs {:?}",
                self.outputs
            )
        })
    }

    /// The indexes of the outputs named in `names` (each checked as by
    /// [`Init::output`]), or of every output when `names` is `None`.
    pub fn outputs_or_all(&self, names: Option<&[String]>, key: &str) -> Result<Vec<u32>, String> {
        match names {
            Some(names) => names.iter().map(|n| self.output(n, key)).collect(),
            None => Ok((0..self.outputs.len() as u32).collect()),
        }
    }

    /// `plugin_config` parsed into `T`; errors start with `plugin_config:`.
    /// Tip: `#[serde(deny_unknown_fields)]` on `T` turns a typo into an error.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        parse_config(&self.config)
    }
}

/// `plugin_config` (its JSON text) parsed into `T`; an error names the full
/// key: `plugin_config.routes.eu: invalid type: integer `7`, expected a string`.
pub fn parse_config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("plugin_config: {inner}")
        } else {
            format!("plugin_config.{path}: {inner}")
        }
    })
}

/// A routing plugin: built once per instance by `init`, then asked to route batches.
pub trait Plugin: Sized + 'static {
    /// Checks the configuration and prepares the plugin; an error fails the load.
    fn init(init: Init) -> Result<Self, String>;
    /// Decides, for every record of `batch`, where it goes; an error fails the whole batch.
    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String>;
}

/// Logs through the host (tagged with the pipeline, rate-limited there).
pub fn log(level: Level, message: &str) {
    bindings::distributary::plugin::log::log(level, message);
}

#[doc(hidden)]
pub mod __private {
    use super::{Batch, Decisions, Init, Plugin, bindings};
    use std::cell::RefCell;

    /// Holds the one plugin value of this instance between calls.
    pub struct Slot<P>(RefCell<Option<P>>);
    // SAFETY: a component instance runs on one thread at a time (wasm32 has
    // no shared-memory threads here), and the slot is reachable only from
    // this instance's exported functions, which the host never re-enters.
    unsafe impl<P> Sync for Slot<P> {}
    impl<P: Plugin> Default for Slot<P> {
        fn default() -> Self {
            Self::new()
        }
    }
    impl<P: Plugin> Slot<P> {
        pub const fn new() -> Self {
            Slot(RefCell::new(None))
        }
        pub fn init(&self, config: String, outputs: Vec<String>) -> Result<(), String> {
            // A panic traps the instance; its message goes to the host first,
            // which adds it to the trap error (stderr is not connected).
            std::panic::set_hook(Box::new(|info| {
                crate::log(crate::Level::Error, &format!("{info}"));
            }));
            let plugin = P::init(Init { config, outputs })?;
            *self.0.borrow_mut() = Some(plugin);
            Ok(())
        }
        pub fn route(
            &self,
            batch: bindings::distributary::plugin::types::Batch,
        ) -> Result<bindings::distributary::plugin::types::Decisions, String> {
            let mut guard = self.0.borrow_mut();
            let plugin = guard.as_mut().ok_or("route called before init")?;
            let batch = Batch::new(batch)?;
            let mut out = Decisions::with_capacity(batch.len());
            plugin.route(&batch, &mut out)?;
            Ok(out.into_wit())
        }
    }
}

/// Exports a [`Plugin`] type as this component's `init` and `route`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __DistributaryExport;
        static __DISTRIBUTARY_SLOT: $crate::__private::Slot<$plugin> =
            $crate::__private::Slot::new();
        impl $crate::bindings::Guest for __DistributaryExport {
            fn init(config: String, outputs: Vec<String>) -> Result<(), String> {
                __DISTRIBUTARY_SLOT.init(config, outputs)
            }
            fn route(
                batch: $crate::bindings::distributary::plugin::types::Batch,
            ) -> Result<$crate::bindings::distributary::plugin::types::Decisions, String> {
                __DISTRIBUTARY_SLOT.route(batch)
            }
        }
        $crate::bindings::export_router!(__DistributaryExport);
    };
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        field: String,
        routes: std::collections::HashMap<String, String>,
    }

    #[test]
    fn config_errors_name_the_full_key() {
        let err = super::parse_config::<Config>(r#"{"field":7,"routes":{}}"#).unwrap_err();
        assert!(
            err.starts_with("plugin_config.field: invalid type: integer `7`"),
            "{err}"
        );
        let err = super::parse_config::<Config>(r#"{"field":"f","routes":{"eu":1}}"#).unwrap_err();
        assert!(
            err.starts_with("plugin_config.routes.eu: invalid type"),
            "{err}"
        );
        let err = super::parse_config::<Config>("7").unwrap_err();
        assert!(err.starts_with("plugin_config: invalid type"), "{err}");
    }
}
