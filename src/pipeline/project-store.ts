import type { Plan } from "../core/plans.js";
import type { Lifecycle } from "./lifecycle.js";

export interface Project {
  id: string;
  name: string;
  plan: Plan;
  /** Epoch milliseconds. */
  createdAt: number;
}

export interface ProjectKeyHashes {
  writeKeyHash: string;
  readKeyHash: string;
}

export interface KeyMatch {
  project: Project;
  kind: "write" | "read";
}

/**
 * Projects and their keys. Keys are only ever stored as hashes (src/core/keys.ts); the store
 * looks a project up by hash. Names need not be unique; ids are.
 */
export interface ProjectStore extends Lifecycle {
  create(project: Project, keys: ProjectKeyHashes): Promise<void>;
  list(): Promise<Project[]>;
  get(id: string): Promise<Project | undefined>;
  /** Returns the updated project, or undefined when there is no such project. */
  setPlan(id: string, plan: Plan): Promise<Project | undefined>;
  /** Replaces both keys at once; the old keys stop working. */
  setKeys(id: string, keys: ProjectKeyHashes): Promise<Project | undefined>;
  /** Removes the project and its keys; false when there was none. Events are removed by the EventStore. */
  delete(id: string): Promise<boolean>;
  findByKeyHash(hash: string): Promise<KeyMatch | undefined>;
}
