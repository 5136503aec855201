// The typed surface of `shmtools`: the facade compiled from src/ (run `npm run build`).
export * from './dist/index'
