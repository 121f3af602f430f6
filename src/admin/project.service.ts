import { randomUUID } from "node:crypto";
import { AppError } from "../core/errors.js";
import type { Ledger } from "../core/event.js";
import { UUID_PATTERN } from "../core/event-schema.js";
import { generateKey, hashKey } from "../core/keys.js";
import { PLAN_RATE_LIMIT_RPM, type Plan } from "../core/plans.js";
import type { EventStore } from "../pipeline/event-store.js";
import type { LedgerRecorder } from "../pipeline/ledger-recorder.js";
import type { Project, ProjectStore } from "../pipeline/project-store.js";

const uuidPattern = new RegExp(UUID_PATTERN);

export interface ProjectView {
  id: string;
  name: string;
  plan: Plan;
  rate_limit_rpm: number;
  created_at: string;
}

export interface ProjectWithKeys extends ProjectView {
  api_key: string;
  read_key: string;
}

export function projectView(project: Project): ProjectView {
  return {
    id: project.id,
    name: project.name,
    plan: project.plan,
    rate_limit_rpm: PLAN_RATE_LIMIT_RPM[project.plan],
    created_at: new Date(project.createdAt).toISOString(),
  };
}

/**
 * A cache of key lookups that must forget a project whose keys, plan or existence changed (the
 * API's KeyResolver). Offline administration (the CLI on the store) has none.
 */
export interface KeyCache {
  forgetProject(projectId: string): void;
}

/**
 * Project administration, shared by the admin API and the CLI: the keys are generated here, shown
 * once, and stored hashed.
 */
export class ProjectService {
  constructor(
    private readonly projects: ProjectStore,
    private readonly events: EventStore,
    private readonly ledger: LedgerRecorder,
    private readonly keyEnv: string,
    private readonly keys?: KeyCache,
  ) {}

  private newKeys() {
    const apiKey = generateKey("write", this.keyEnv);
    const readKey = generateKey("read", this.keyEnv);
    return { apiKey, readKey, hashes: { writeKeyHash: hashKey(apiKey), readKeyHash: hashKey(readKey) } };
  }

  async create(name: string, plan: Plan): Promise<ProjectWithKeys> {
    const project: Project = { id: randomUUID(), name, plan, createdAt: Date.now() };
    const { apiKey, readKey, hashes } = this.newKeys();
    await this.projects.create(project, hashes);
    return { ...projectView(project), api_key: apiKey, read_key: readKey };
  }

  async list(): Promise<ProjectView[]> {
    return (await this.projects.list()).map(projectView);
  }

  /** A project id as stored (lower case); anything that is not a uuid names no project. */
  private idOf(id: string): string {
    if (!uuidPattern.test(id)) throw new AppError("not_found", { message: `No project ${id.slice(0, 100)}` });
    return id.toLowerCase();
  }

  async get(rawId: string): Promise<Project> {
    const id = this.idOf(rawId);
    const project = await this.projects.get(id);
    if (!project) throw new AppError("not_found", { message: `No project ${id}` });
    return project;
  }

  async setPlan(rawId: string, plan: Plan): Promise<ProjectView> {
    const id = this.idOf(rawId);
    const project = await this.projects.setPlan(id, plan);
    if (!project) throw new AppError("not_found", { message: `No project ${id}` });
    this.keys?.forgetProject(id);
    return projectView(project);
  }

  async rotateKeys(rawId: string): Promise<ProjectWithKeys> {
    const id = this.idOf(rawId);
    const { apiKey, readKey, hashes } = this.newKeys();
    const project = await this.projects.setKeys(id, hashes);
    if (!project) throw new AppError("not_found", { message: `No project ${id}` });
    this.keys?.forgetProject(id);
    return { ...projectView(project), api_key: apiKey, read_key: readKey };
  }

  /** The project's loss ledger, with what the API has counted but not yet written. */
  async stats(rawId: string): Promise<Ledger> {
    const { id } = await this.get(rawId);
    await this.ledger.flush();
    return this.events.readLedger(id);
  }

  /** Deletes the project's keys first (no new events), then its events and ledger. */
  async delete(rawId: string): Promise<void> {
    const id = this.idOf(rawId);
    const deleted = await this.projects.delete(id);
    if (!deleted) throw new AppError("not_found", { message: `No project ${id}` });
    this.keys?.forgetProject(id);
    this.ledger.forget(id);
    await this.events.deleteProject(id);
  }
}
