//! The page's model tools: Save model, Open model (and the kept copy the
//! page restores), and predictions of pictures and camera frames. The page
//! calls `Page`'s methods, which return promises; the requests wait in an
//! inbox the app serves once per frame (the trainer and the GPU belong to
//! the frame loop), and each promise settles when its answer is ready, the
//! GPU's part read back without blocking.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use eframe::egui;
use wasm_bindgen::prelude::*;

use crate::predict::{ClassProbability, ModelCard, OpenedModel, Predictor};
use crate::train::ModelSnapshot;
use crate::train::checkpoint;
use crate::ui::App;

/// A promise's two ends.
struct Reply {
    resolve: js_sys::Function,
    reject: js_sys::Function,
}

impl Reply {
    fn ok(self, value: &JsValue) {
        let _ = self.resolve.call1(&JsValue::NULL, value);
    }

    fn fail(self, message: &str) {
        let _ = self
            .reject
            .call1(&JsValue::NULL, &JsValue::from_str(message));
    }
}

enum Request {
    Save(Reply),
    Open {
        name: String,
        bytes: Vec<u8>,
        reply: Reply,
    },
    Predict {
        rgba: Vec<u8>,
        width: u32,
        height: u32,
        reply: Reply,
    },
}

/// Requests from the page, and the frame loop's context to wake it.
#[derive(Default)]
pub struct Inbox {
    requests: Vec<Request>,
    ctx: Option<egui::Context>,
}

/// The page's handle on the running app (what `start` resolves to).
#[wasm_bindgen]
pub struct Page {
    inbox: Rc<RefCell<Inbox>>,
}

impl Page {
    pub fn new(inbox: Rc<RefCell<Inbox>>) -> Self {
        Page { inbox }
    }

    fn ask(&self, request: impl FnOnce(Reply) -> Request) -> js_sys::Promise {
        let mut request = Some(request);
        let promise = js_sys::Promise::new(&mut |resolve, reject| {
            if let Some(make) = request.take() {
                self.inbox
                    .borrow_mut()
                    .requests
                    .push(make(Reply { resolve, reject }));
            }
        });
        if let Some(ctx) = &self.inbox.borrow().ctx {
            ctx.request_repaint();
        }
        promise
    }
}

#[wasm_bindgen]
impl Page {
    /// The running model as a `model.safetensors` of the desktop (tensors,
    /// names and metadata): resolves to `[file name, bytes]`.
    pub fn save_model(&self) -> js_sys::Promise {
        self.ask(Request::Save)
    }

    /// Opens a model file (a desktop checkpoint's model.safetensors or a
    /// torchvision state dict): predictions use it, and a run from it waits
    /// paused. Resolves to a sentence saying what was opened; rejects with
    /// the reason a file cannot be used.
    pub fn open_model(&self, name: String, bytes: Vec<u8>) -> js_sys::Promise {
        self.ask(|reply| Request::Open { name, bytes, reply })
    }

    /// The top 5 classes of an RGBA picture as JSON
    /// `[{"class", "probability"}]`, most likely first.
    pub fn predict(&self, rgba: Vec<u8>, width: u32, height: u32) -> js_sys::Promise {
        self.ask(|reply| Request::Predict {
            rgba,
            width,
            height,
            reply,
        })
    }
}

/// The tools' state between frames.
pub struct Tools {
    inbox: Rc<RefCell<Inbox>>,
    saving: Vec<(ModelSnapshot, String, Reply)>,
    waiting: VecDeque<(Vec<u8>, u32, u32, Reply)>,
    /// The prediction on its way back, and which predictor has it.
    predicting: Option<(Source, Reply)>,
    /// The opened model's: predicts until the run from it trains a step.
    opened: Option<Predictor>,
    /// Follows the running model's weights (copied before each picture).
    following: Option<Predictor>,
}

#[derive(Clone, Copy)]
enum Source {
    Opened,
    Following,
}

impl Tools {
    pub fn new(inbox: Rc<RefCell<Inbox>>) -> Self {
        Tools {
            inbox,
            saving: vec![],
            waiting: VecDeque::new(),
            predicting: None,
            opened: None,
            following: None,
        }
    }

    /// Serves the page's requests and settles what has come back; called
    /// once per frame before the app draws.
    pub fn serve(&mut self, app: &mut App, ctx: &egui::Context) {
        let requests = {
            let mut inbox = self.inbox.borrow_mut();
            inbox.ctx.get_or_insert_with(|| ctx.clone());
            std::mem::take(&mut inbox.requests)
        };
        for request in requests {
            match request {
                Request::Save(reply) => self.save(app, reply),
                Request::Open { name, bytes, reply } => match self.open(app, ctx, &name, &bytes) {
                    Ok(said) => reply.ok(&JsValue::from_str(&said)),
                    Err(e) => reply.fail(&format!("{e:#}")),
                },
                Request::Predict {
                    rgba,
                    width,
                    height,
                    reply,
                } => self.waiting.push_back((rgba, width, height, reply)),
            }
        }
        self.finish_saves();
        self.finish_prediction();
        self.start_prediction(app);
        if !self.saving.is_empty() || self.predicting.is_some() || !self.waiting.is_empty() {
            ctx.request_repaint();
        }
    }

    fn save(&mut self, app: &App, reply: Reply) {
        let Some(session) = &app.session else {
            return reply.fail("there is no model yet: start a run or open a model");
        };
        let trainer = &session.trainer;
        match trainer.request_model_snapshot() {
            Ok(snapshot) => {
                let name = format!(
                    "{}-step{}.safetensors",
                    trainer.config.model.name, snapshot.step
                );
                self.saving.push((snapshot, name, reply));
            }
            Err(e) => reply.fail(&e.to_string()),
        }
    }

    fn finish_saves(&mut self) {
        let mut still = vec![];
        for (snapshot, name, reply) in self.saving.drain(..) {
            match snapshot.is_ready() {
                Ok(false) => still.push((snapshot, name, reply)),
                Ok(true) => match encode(snapshot, &name) {
                    Ok(bytes) => {
                        let pair = js_sys::Array::of2(
                            &JsValue::from_str(&name),
                            &js_sys::Uint8Array::from(bytes.as_slice()),
                        );
                        reply.ok(&pair);
                    }
                    Err(e) => reply.fail(&e),
                },
                Err(e) => reply.fail(&e.to_string()),
            }
        }
        self.saving = still;
    }

    /// Opens a model: its predictor (eval's checks), then a paused run from
    /// it (`--init`'s checks). A file the predictor refuses changes nothing.
    fn open(
        &mut self,
        app: &mut App,
        ctx: &egui::Context,
        name: &str,
        bytes: &[u8],
    ) -> anyhow::Result<String> {
        let model = Rc::new(OpenedModel::from_bytes(name, bytes)?);
        let mut predictor =
            Predictor::new(app.gpu(), model.card.clone(), app.settings.run.precision)?;
        predictor.load(&model.dict, std::path::Path::new(name))?;
        if let Some((Source::Opened, _)) = &self.predicting
            && let Some((_, reply)) = self.predicting.take()
        {
            reply.fail("another model was opened");
        }
        self.opened = Some(predictor);
        let card = &model.card;
        let mut said = format!(
            "{name}: {}, {} classes, {}x{} pictures",
            card.spec, card.spec.num_classes, card.side, card.side
        );
        if let Some(note) = &card.assumed {
            said = format!("{said} ({note})");
        }
        // A run from it, paused: Resume trains from these weights.
        app.settings.model = model.model_settings();
        app.settings.recipe.normalize = Some(model.normalize());
        app.init_model = Some(model.clone());
        let started = app.try_start(ctx);
        app.init_model = None;
        match started {
            Ok(()) => {
                if let Some(session) = &mut app.session {
                    session.pause();
                }
                Ok(format!(
                    "{said}; its run waits paused (Resume trains from it)"
                ))
            }
            Err(e) => {
                // The run it replaces is gone either way: the page opened a
                // model, and predicts with it.
                let why = format!("{e:#}");
                app.session = None;
                app.error = Some(why.clone());
                Ok(format!(
                    "{said}; predicting with it (a run from it cannot start here: {why})"
                ))
            }
        }
    }

    fn start_prediction(&mut self, app: &App) {
        if self.predicting.is_some() {
            return;
        }
        let Some((rgba, width, height, reply)) = self.waiting.pop_front() else {
            return;
        };
        let started = self.predictor(app).and_then(|(source, predictor)| {
            predictor.submit(&rgba, width, height)?;
            Ok(source)
        });
        match started {
            Ok(source) => self.predicting = Some((source, reply)),
            Err(e) => reply.fail(&format!("{e:#}")),
        }
    }

    /// The opened model's predictor until its run trains a step, else one
    /// that follows the running model.
    fn predictor(&mut self, app: &App) -> anyhow::Result<(Source, &mut Predictor)> {
        let trained = app
            .session
            .as_ref()
            .is_some_and(|s| s.trainer.progress().global_step > 0);
        if let (Some(opened), false) = (&mut self.opened, trained) {
            return Ok((Source::Opened, opened));
        }
        let Some(session) = &app.session else {
            anyhow::bail!("there is no model yet: start a run or open a model");
        };
        let trainer = &session.trainer;
        let card = ModelCard::of_trainer(trainer)?;
        let reuse = self
            .following
            .as_ref()
            .is_some_and(|p| p.card == card && p.precision() == trainer.config.precision);
        if !reuse {
            self.following = Some(Predictor::new(app.gpu(), card, trainer.config.precision)?);
        }
        let predictor = self.following.as_mut().expect("built above");
        predictor.copy_weights(trainer)?;
        Ok((Source::Following, predictor))
    }

    fn finish_prediction(&mut self) {
        let Some((source, _)) = &self.predicting else {
            return;
        };
        let predictor = match source {
            Source::Opened => self.opened.as_mut(),
            Source::Following => self.following.as_mut(),
        };
        let polled = match predictor {
            Some(p) => p.poll(),
            None => Err(anyhow::anyhow!("the model was replaced")),
        };
        let reply = match polled {
            Ok(None) => return,
            Ok(Some(top)) => Ok(top),
            Err(e) => Err(format!("{e:#}")),
        };
        let (_, promise) = self.predicting.take().expect("checked above");
        match reply {
            Ok(top) => promise.ok(&JsValue::from_str(&top_json(&top))),
            Err(e) => promise.fail(&e),
        }
    }
}

fn encode(snapshot: ModelSnapshot, name: &str) -> Result<Vec<u8>, String> {
    let (tensors, metadata) = snapshot.take().map_err(|e| e.to_string())?;
    checkpoint::encode_safetensors(&tensors, metadata, std::path::Path::new(name))
        .map_err(|e| e.to_string())
}

fn top_json(top: &[ClassProbability]) -> String {
    serde_json::to_string(top).unwrap_or_else(|_| "[]".into())
}
