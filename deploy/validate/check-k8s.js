#!/usr/bin/env node
// Strict schema check of Kubernetes manifests: `kubectl kustomize DIR |
// node check-k8s.js` (or a file argument). Every object must be a kind
// kubernetes-models knows, have the right types, and hold no field the
// schema does not name. Exits 1 with one line per problem.
"use strict";
const fs = require("fs");
const YAML = require("yaml");

// kubernetes-models' validators check types and required fields but, like
// the API server's lenient decoding, ignore fields they do not know. A
// misspelt field would then pass and be dropped by the cluster. So we watch
// which fields the validator reads: it reads every field its schema names
// (and enumerates maps), so a field it never touched is unknown.
function watch(value, path, watched) {
  if (value === null || typeof value !== "object") return value;
  const record = { path, value, read: new Set(), enumerated: false };
  if (!Array.isArray(value)) watched.push(record);
  const children = new Map();
  return new Proxy(value, {
    get(target, key) {
      if (typeof key !== "string") return target[key];
      record.read.add(key);
      if (!children.has(key)) {
        children.set(key, watch(target[key], `${path}.${key}`, watched));
      }
      return children.get(key);
    },
    has(target, key) {
      record.read.add(key);
      return key in target;
    },
    ownKeys(target) {
      record.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function modelFor(apiVersion, kind) {
  try {
    // "v1" is the core group; "apps/v1" is kubernetes-models/apps/v1.
    return require(`kubernetes-models/${apiVersion}`)[kind];
  } catch (error) {
    return undefined;
  }
}

function check(object) {
  const { apiVersion, kind } = object || {};
  const Model = modelFor(apiVersion, kind);
  if (!Model) return [`no schema for apiVersion ${apiVersion}, kind ${kind}`];
  const watched = [];
  try {
    Model.prototype.validate.call(watch(object, "", watched));
  } catch (error) {
    // A validator stops at a bad value, so unread fields mean nothing yet.
    return [error.message.replace(/\s+/g, " ")];
  }
  const problems = [];
  for (const { path, value, read, enumerated } of watched) {
    if (enumerated) continue;  // a map: any key is allowed
    for (const key of Object.keys(value)) {
      if (!read.has(key)) problems.push(`unknown field ${path}.${key}`);
    }
  }
  return problems;
}

const input = fs.readFileSync(process.argv[2] || 0, "utf8");
const documents = YAML.parseAllDocuments(input);
let failed = false;
let count = 0;
for (const document of documents) {
  if (document.errors.length > 0) {
    console.error(`YAML error: ${document.errors[0].message}`);
    failed = true;
    continue;
  }
  const object = document.toJS();
  if (object === null) continue;
  count++;
  const name = `${object.kind}/${object.metadata && object.metadata.name}`;
  for (const problem of check(object)) {
    console.error(`${name}: ${problem}`);
    failed = true;
  }
}
if (count === 0) {
  console.error("no Kubernetes objects in the input");
  failed = true;
}
if (failed) process.exit(1);
console.log(`${count} objects valid`);
