// The playground page: wires the form, the mask editor, job cards and history to the worker's native API.

import * as api from "./api.js";
import { GenerationForm } from "./form.js";
import { History, JobCard } from "./jobs.js";
import { MaskEditor } from "./mask.js";

const $ = (id) => document.getElementById(id);
const ROUTES = { txt2img: "/execute", img2img: "/img2img", inpaint: "/inpaint" };

const editor = new MaskEditor($("source-image"), $("mask-overlay"));
const form = new GenerationForm($("generate-form"), editor);
const actions = {
  reuseSeed: (seed) => form.reuseSeed(seed),
  reproduce: (entry) => form.fill(entry.task, entry.body).then(() => $("prompt").focus()),
  sendTo: (task, dataUrl) => {
    form.task = task;
    return loadSource(dataUrl);
  },
  record: (entry) => history.add(entry),
};
const history = new History($("history"), actions);

async function loadCapabilities() {
  let caps;
  try {
    caps = await api.getJSON("/v1/capabilities");
  } catch (error) {
    if (error.status === 401) {
      askKey(api.storedKey() ? "The worker refused that key: " + error.message : "This worker needs its API key.");
    }
    $("model").textContent = `cannot read the worker's capabilities: ${error.message}`;
    return;
  }
  form.configure(caps);
  const state = caps.ready ? "" : " · loading the model…";
  $("model").textContent = `${caps.family} · ${caps.device} ${caps.dtype}${state}`;
  $("model").title = caps.model_ref;
  if (!caps.ready) setTimeout(loadCapabilities, 2000);
}

function askKey(reason) {
  $("key-reason").textContent = reason;
  $("key-input").value = api.storedKey();
  if (!$("key-dialog").open) $("key-dialog").showModal();
}

$("key-button").addEventListener("click", () => askKey("The key of a worker started with --api-key."));
$("key-dialog").addEventListener("close", () => {
  const choice = $("key-dialog").returnValue;
  if (choice === "save") api.storeKey($("key-input").value.trim());
  if (choice === "forget") api.storeKey("");
  if (choice !== "cancel") loadCapabilities();
});

async function loadSource(dataUrl) {
  form.sourceLoaded(await editor.load(dataUrl));
}

function readFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => loadSource(reader.result);
  reader.readAsDataURL(file);
}

$("image-file").addEventListener("change", (event) => readFile(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  readFile(event.dataTransfer.files[0]);
});

$("generate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  form.clearErrors();
  const request = form.request();
  if (!request) return;
  const card = new JobCard($("jobs"), request.task, request.body, actions);
  try {
    await api.generate(ROUTES[request.task], request.body, (name, data) => card.on(name, data));
    card.streamEnded();
  } catch (error) {
    if (!(error instanceof api.ApiError)) {
      card.failed(`the worker could not be reached: ${error.message}`);
      return;
    }
    card.remove(); // refused before it was queued: nothing ran
    if (error.status === 401) askKey("This worker needs its API key.");
    form.showError(error);
  }
});

// Ctrl+Enter (⌘+Enter) in a text box generates, as in most prompt UIs
$("generate-form").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $("generate-form").requestSubmit();
  }
});
$("clear-history").addEventListener("click", () => history.clear());
loadCapabilities();
